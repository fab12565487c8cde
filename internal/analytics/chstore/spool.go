package chstore

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
	"sync/atomic"
	"time"

	"github.com/pedal-project/pedal/internal/analytics"
)

// ErrSpoolFull is returned by Upsert when ClickHouse is unavailable and the
// spool holds MaxSpoolBytes already: the rows are neither in ClickHouse nor
// spooled, and the caller should retry later.
var ErrSpoolFull = errors.New("chstore: ClickHouse unavailable and spool full")

// vrow is a row with the version it is inserted with.
type vrow struct {
	analytics.Row
	version uint64
}

// spool is a directory of files, each holding the rows of one failed insert:
//
//	"pchs" 0x01  uvarint(rows)  rows...  crc32c(all before, little endian)
//	row: uvarint(version) varint(start, Unix s) uvarint(len) ad_id uvarint(len) country
//	     uvarint(clicks) uvarint(bot) uvarint(ip_rate) uvarint(duplicates) uvarint(too_late)
//
// A file is written to a temporary name, synced, renamed to
// <20-digit sequence>.spool and the directory synced, so a file either exists
// whole or not at all. Only the flusher goroutine uses a spool after Open;
// bytes and rows are atomics for the metrics.
type spool struct {
	dir   string
	max   int64
	files []spoolFile // in sequence order
	next  uint64
	bytes atomic.Int64
	rows  atomic.Int64
}

type spoolFile struct {
	name string
	size int64
	rows int
}

const spoolMagic = "pchs\x01"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// openSpool opens (creating) dir and checks every file in it; it returns the
// largest version spooled. A file that fails its checksum is renamed to
// *.corrupt and left out.
func openSpool(dir string, maxBytes int64) (*spool, uint64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, fmt.Errorf("create spool: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("read spool: %w", err)
	}
	s := &spool{dir: dir, max: maxBytes, next: 1}
	var maxVersion uint64
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name)) // a write cut short by a crash
			continue
		}
		seqStr, ok := strings.CutSuffix(name, ".spool")
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		if err != nil {
			continue
		}
		rows, err := s.read(spoolFile{name: name})
		if err != nil {
			os.Rename(filepath.Join(dir, name), filepath.Join(dir, name+".corrupt"))
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, 0, fmt.Errorf("read spool: %w", err)
		}
		for _, r := range rows {
			maxVersion = max(maxVersion, r.version)
		}
		s.add(spoolFile{name: name, size: info.Size(), rows: len(rows)})
		s.next = max(s.next, seq+1)
	}
	slices.SortFunc(s.files, func(a, b spoolFile) int { return strings.Compare(a.name, b.name) })
	return s, maxVersion, nil
}

func (s *spool) add(f spoolFile) {
	s.files = append(s.files, f)
	s.bytes.Add(f.size)
	s.rows.Add(int64(f.rows))
}

// write stores rows durably in a new file, or returns ErrSpoolFull.
func (s *spool) write(rows []vrow) error {
	buf := encodeSpool(rows)
	if s.bytes.Load()+int64(len(buf)) > s.max {
		return ErrSpoolFull
	}
	name := fmt.Sprintf("%020d.spool", s.next)
	tmp := filepath.Join(s.dir, name+".tmp")
	if err := writeSync(tmp, buf); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.next++
	s.add(spoolFile{name: name, size: int64(len(buf)), rows: len(rows)})
	return nil
}

func writeSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// take returns the oldest files holding at most maxRows rows together.
func (s *spool) take(maxRows int) []spoolFile {
	n, i := 0, 0
	for ; i < len(s.files) && n+s.files[i].rows <= maxRows; i++ {
		n += s.files[i].rows
	}
	return s.files[:i:i]
}

// remove deletes files, which take returned, once their rows are in ClickHouse.
func (s *spool) remove(files []spoolFile) error {
	var errs []error
	for _, f := range files {
		if err := os.Remove(filepath.Join(s.dir, f.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		s.bytes.Add(-f.size)
		s.rows.Add(-int64(f.rows))
	}
	s.files = slices.Delete(s.files, 0, len(files))
	if len(errs) == 0 {
		errs = append(errs, syncDir(s.dir))
	}
	return errors.Join(errs...)
}

// quarantine renames an unreadable file to *.corrupt and forgets it.
func (s *spool) quarantine(f spoolFile) {
	os.Rename(filepath.Join(s.dir, f.name), filepath.Join(s.dir, f.name+".corrupt"))
	i := slices.IndexFunc(s.files, func(g spoolFile) bool { return g.name == f.name })
	if i >= 0 {
		s.files = slices.Delete(s.files, i, i+1)
		s.bytes.Add(-f.size)
		s.rows.Add(-int64(f.rows))
	}
}

func (s *spool) read(f spoolFile) ([]vrow, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, f.name))
	if err != nil {
		return nil, err
	}
	rows, err := decodeSpool(b)
	if err != nil {
		return nil, fmt.Errorf("spool file %s: %w", f.name, err)
	}
	return rows, nil
}

func encodeSpool(rows []vrow) []byte {
	b := make([]byte, 0, 64*len(rows)+16)
	b = append(b, spoolMagic...)
	b = binary.AppendUvarint(b, uint64(len(rows)))
	for _, r := range rows {
		b = binary.AppendUvarint(b, r.version)
		b = binary.AppendVarint(b, r.Start.Unix())
		b = binary.AppendUvarint(b, uint64(len(r.AdID)))
		b = append(b, r.AdID...)
		b = binary.AppendUvarint(b, uint64(len(r.Country)))
		b = append(b, r.Country...)
		for _, n := range []int64{r.Clicks, r.Bot, r.IPRate, r.Duplicates, r.TooLate} {
			b = binary.AppendUvarint(b, uint64(n))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

var errCorrupt = errors.New("corrupt")

func decodeSpool(b []byte) ([]vrow, error) {
	if len(b) < len(spoolMagic)+4 || string(b[:len(spoolMagic)]) != spoolMagic {
		return nil, errCorrupt
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errCorrupt
	}
	d := decoder{b: body[len(spoolMagic):]}
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		return nil, errCorrupt
	}
	rows := make([]vrow, n)
	for i := range rows {
		r := &rows[i]
		r.version = d.uvarint()
		r.Start = time.Unix(d.varint(), 0).UTC()
		r.AdID = d.str()
		r.Country = d.str()
		for _, p := range []*int64{&r.Clicks, &r.Bot, &r.IPRate, &r.Duplicates, &r.TooLate} {
			*p = int64(d.uvarint())
		}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errCorrupt
	}
	return rows, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err, d.b = errCorrupt, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err, d.b = errCorrupt, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err, d.b = errCorrupt, nil
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
