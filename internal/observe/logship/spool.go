package logship

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// spool is a directory of files, each holding one batch ready to send:
//
//	"plog" 0x01  uvarint(records)  ExportLogsServiceRequest (protobuf)  crc32c(all before, little endian)
//
// A file is written to <name>.tmp and renamed to <20-digit sequence>.logspool,
// so a file exists whole or not at all (after a process crash; files are not
// synced, see the package comment). Files are sent and dropped oldest first.
//
// The writer appends, the sender takes the oldest file, sends it and then
// removes it or puts it back; both under mu. The file being sent may be
// dropped to make room while its request is in flight: it leaves the disk at
// once, and the sender's outcome decides whether its records count as
// exported or dropped, so each record is counted exactly once.
type spool struct {
	dir string
	max int64
	m   *metrics

	mu             sync.Mutex
	files          []spoolFile // oldest first
	next           uint64
	bytes          int64
	records        int64
	sending        string // name of the file being sent, if any
	sendingDropped bool   // that file was dropped to make room meanwhile
}

type spoolFile struct {
	name    string
	size    int64
	records int
}

const (
	spoolMagic  = "plog\x01"
	spoolSuffix = ".logspool"
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	errCorrupt = errors.New("corrupt spool file")
)

// openSpool opens (creating) dir and checks every file in it. Files cut short
// by a crash (*.tmp) are removed; files failing their checksum are removed and
// their records, when the header still tells how many, counted as dropped.
func openSpool(dir string, maxBytes int64, m *metrics, rep *reporter) (*spool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create log spool: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read log spool: %w", err)
	}
	s := &spool{dir: dir, max: maxBytes, m: m, next: 1}
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, spoolSuffix+".tmp") {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		seqStr, ok := strings.CutSuffix(name, spoolSuffix)
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read log spool: %w", err)
		}
		n, _, err := decodeSpoolFile(b)
		if err != nil {
			os.Remove(filepath.Join(dir, name))
			m.dropped.WithLabelValues(reasonCorrupt).Add(float64(n))
			rep.printf("spool", "removed spool file %s: %v (%d records lost)", filepath.Join(dir, name), err, n)
			continue
		}
		s.files = append(s.files, spoolFile{name: name, size: int64(len(b)), records: n})
		s.bytes += int64(len(b))
		s.records += int64(n)
		s.next = max(s.next, seq+1)
	}
	slices.SortFunc(s.files, func(a, b spoolFile) int { return strings.Compare(a.name, b.name) })
	s.gauges()
	// Dropping oldest files until the spool fits keeps a lowered cap honest.
	for s.bytes > s.max && len(s.files) > 0 {
		s.dropOldest()
	}
	s.gauges()
	return s, nil
}

// gauges publishes the spool's size; mu held (or not yet shared).
func (s *spool) gauges() {
	s.m.spoolBytes.Set(float64(s.bytes))
	s.m.spoolRecords.Set(float64(s.records))
}

// append stores a batch of records, encoded as payload, in a new file, first
// dropping the oldest files until the spool stays within its cap. A batch
// larger than the whole cap, or one that cannot be written, is dropped
// itself; the error says why.
func (s *spool) append(records int, payload []byte) error {
	b := make([]byte, 0, len(spoolMagic)+binary.MaxVarintLen64+len(payload)+4)
	b = append(b, spoolMagic...)
	b = binary.AppendUvarint(b, uint64(records))
	b = append(b, payload...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	size := int64(len(b))

	s.mu.Lock()
	defer s.mu.Unlock()
	if size > s.max {
		s.m.dropped.WithLabelValues(reasonSpoolFull).Add(float64(records))
		return fmt.Errorf("a batch of %d records (%d bytes) is larger than the whole spool (%d bytes): dropped", records, size, s.max)
	}
	dropped := 0
	for s.bytes+size > s.max && len(s.files) > 0 {
		dropped += s.dropOldest()
	}
	name := fmt.Sprintf("%020d%s", s.next, spoolSuffix)
	if err := writeFile(filepath.Join(s.dir, name), b); err != nil {
		s.m.dropped.WithLabelValues(reasonSpoolError).Add(float64(records))
		s.gauges()
		return fmt.Errorf("write spool file (%d records dropped): %w", records, err)
	}
	s.next++
	s.files = append(s.files, spoolFile{name: name, size: size, records: records})
	s.bytes += size
	s.records += int64(records)
	s.gauges()
	if dropped > 0 {
		return fmt.Errorf("spool full (%d bytes): dropped the oldest %d records", s.max, dropped)
	}
	return nil
}

// dropOldest deletes the oldest file and returns how many records were
// counted as dropped (none for the file being sent: its outcome decides).
// mu held.
func (s *spool) dropOldest() int {
	f := s.files[0]
	s.files = slices.Delete(s.files, 0, 1)
	s.bytes -= f.size
	s.records -= int64(f.records)
	os.Remove(filepath.Join(s.dir, f.name))
	if f.name == s.sending {
		s.sendingDropped = true
		return 0
	}
	s.m.dropped.WithLabelValues(reasonSpoolFull).Add(float64(f.records))
	return f.records
}

func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// take returns the oldest file and marks it as being sent; the caller reports
// the outcome with delivered, discard or release.
func (s *spool) take() (spoolFile, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.files) == 0 {
		return spoolFile{}, false
	}
	s.sending, s.sendingDropped = s.files[0].name, false
	return s.files[0], true
}

// read returns the request stored in f.
func (s *spool) read(f spoolFile) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, f.name))
	if err != nil {
		return nil, err
	}
	_, payload, err := decodeSpoolFile(b)
	return payload, err
}

// delivered records that the endpoint accepted f, rejecting the given number
// of its records (an OTLP partial success), and removes f.
func (s *spool) delivered(f spoolFile, rejected int) {
	rejected = min(max(rejected, 0), f.records)
	s.m.exported.Add(float64(f.records - rejected))
	if rejected > 0 {
		s.m.dropped.WithLabelValues(reasonRejected).Add(float64(rejected))
	}
	s.finish(f)
}

// discard removes f without delivering it, counting its records as dropped
// for reason.
func (s *spool) discard(f spoolFile, reason string) {
	s.m.dropped.WithLabelValues(reason).Add(float64(f.records))
	s.finish(f)
}

func (s *spool) finish(f spoolFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sending = ""
	if s.sendingDropped {
		return // already off the disk and out of the gauges
	}
	if len(s.files) > 0 && s.files[0].name == f.name {
		s.files = slices.Delete(s.files, 0, 1)
		s.bytes -= f.size
		s.records -= int64(f.records)
		os.Remove(filepath.Join(s.dir, f.name))
		s.gauges()
	}
}

// release puts f back after a failed attempt, to be taken again. If f was
// dropped to make room meanwhile, its records are counted as dropped now.
func (s *spool) release(f spoolFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sending = ""
	if s.sendingDropped {
		s.m.dropped.WithLabelValues(reasonSpoolFull).Add(float64(f.records))
	}
}

// size returns the records and bytes spooled.
func (s *spool) size() (records, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records, s.bytes
}

// decodeSpoolFile checks a spool file and returns its record count and
// payload. When only the checksum fails, the count read from the header is
// returned with the error.
func decodeSpoolFile(b []byte) (records int, payload []byte, err error) {
	if len(b) < len(spoolMagic)+1+4 || string(b[:len(spoolMagic)]) != spoolMagic {
		return 0, nil, errCorrupt
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	n, k := binary.Uvarint(body[len(spoolMagic):])
	if k <= 0 || n > uint64(len(body)) {
		return 0, nil, errCorrupt
	}
	if crc32.Checksum(body, castagnoli) != sum {
		return int(n), nil, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	return int(n), body[len(spoolMagic)+k:], nil
}
