package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"strconv"
	"sync"
)

// BurstLimit is the number of clicks per IP, ad and minute that count as valid;
// the clicks of a burst beyond it are invalid.
const BurstLimit = 5

// ledgerWriter appends the acknowledged clicks to the ledger file. Safe for
// concurrent use; the first write error stops the writes and is kept.
type ledgerWriter struct {
	gen         *generator // only its click id prefix is used, which is immutable
	withCountry bool

	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	buf []byte
	err error
}

func createLedger(path string, gen *generator, withCountry bool) (*ledgerWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create ledger: %w", err)
	}
	return &ledgerWriter{gen: gen, withCountry: withCountry, f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

// write appends a line for each click but those at the indexes in rejected, which
// is sorted.
func (l *ledgerWriter) write(clicks []click, rejected []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	b := l.buf[:0]
	for i := range clicks {
		if len(rejected) > 0 && rejected[0] == i {
			rejected = rejected[1:]
			continue
		}
		b = l.gen.appendLedgerLine(b, &clicks[i], l.withCountry)
	}
	if _, err := l.w.Write(b); err != nil {
		l.err = fmt.Errorf("write ledger: %w", err)
	}
	if cap(b) <= 1<<20 {
		l.buf = b
	}
}

// close flushes and closes the file, returning the first error of any write.
func (l *ledgerWriter) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		if err := l.w.Flush(); err != nil {
			l.err = fmt.Errorf("write ledger: %w", err)
		}
	}
	if err := l.f.Close(); err != nil && l.err == nil {
		l.err = fmt.Errorf("close ledger: %w", err)
	}
	return l.err
}

// AdCountryMinute keys the expected counts of an aggregation.
type AdCountryMinute struct {
	AdID    string
	Country string // empty for redirect clicks: the server derives it
	Minute  int64  // start of the minute, Unix milliseconds
}

// LedgerSummary holds what an aggregation of the ledger's clicks must reproduce.
// A click is a distinct (ad_id, click_id) pair: deduplication keeps one per pair.
// Valid clicks are the distinct ones that are not bots, counting of each burst
// (one IP, ad and minute) only its first BurstLimit clicks.
type LedgerSummary struct {
	Lines          int64          // lines read
	LinesByKind    map[Kind]int64 // lines per kind as written
	Distinct       int64          // distinct (ad_id, click_id) pairs
	DuplicateLines int64          // Lines - Distinct: what deduplication drops
	// DistinctByKind counts the distinct pairs by the kind of the click they
	// repeat; a pair seen only in duplicate lines (its original's request failed)
	// counts as unique, since only unique clicks are repeated.
	DistinctByKind map[Kind]int64
	Valid          int64 // distinct clicks that are valid
	InvalidBot     int64 // distinct bot clicks
	InvalidBurst   int64 // distinct burst clicks beyond BurstLimit per IP, ad and minute
	// Expected counts the valid clicks per ad, country and minute (of ts); Invalid
	// the invalid ones (bots and excess bursts).
	Expected map[AdCountryMinute]int64
	Invalid  map[AdCountryMinute]int64
}

// SummarizeLedger reads a ledger (lines of click_id, ad_id, country, ts_ms, kind
// separated by tabs) and computes the counts an aggregation must reproduce; see
// LedgerSummary. Lines may come in any order: a duplicate may precede its
// original. A burst click's group (its IP) is read from its click id
// (lg-<run>-<seq>.b<group>); lacking one, a burst is grouped by ad, country and
// minute.
func SummarizeLedger(r io.Reader) (LedgerSummary, error) {
	type entry struct {
		kind  Kind  // KindDuplicate: only duplicate lines seen so far
		key   int32 // index into keys
		group int32 // index into groups; for burst clicks
	}
	type groupKey struct {
		name string
		key  int32
	}
	seedA, seedB := maphash.MakeSeed(), maphash.MakeSeed()
	entries := make(map[[2]uint64]entry)
	keyIndex := make(map[AdCountryMinute]int32)
	var keys []AdCountryMinute
	ads, countries := make(map[string]string), make(map[string]string) // interned strings
	groupIndex := make(map[groupKey]int32)
	var groups []groupKey

	s := LedgerSummary{LinesByKind: make(map[Kind]int64), DistinctByKind: make(map[Kind]int64),
		Expected: make(map[AdCountryMinute]int64), Invalid: make(map[AdCountryMinute]int64)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	var fields [5][]byte
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		rest, n := line, 0
		for n < len(fields) {
			i := bytes.IndexByte(rest, '\t')
			if i < 0 {
				fields[n], rest = rest, nil
				n++
				break
			}
			fields[n], rest = rest[:i], rest[i+1:]
			n++
		}
		if n != len(fields) || rest != nil {
			return LedgerSummary{}, fmt.Errorf("ledger line %d: want 5 tab-separated fields (click_id, ad_id, country, ts_ms, kind)", lineNo)
		}
		clickID, adID, country := fields[0], fields[1], fields[2]
		if len(clickID) == 0 || len(adID) == 0 {
			return LedgerSummary{}, fmt.Errorf("ledger line %d: empty click_id or ad_id", lineNo)
		}
		ts, err := strconv.ParseInt(string(fields[3]), 10, 64)
		if err != nil {
			return LedgerSummary{}, fmt.Errorf("ledger line %d: ts_ms: %w", lineNo, err)
		}
		kind, err := ParseKind(string(fields[4]))
		if err != nil {
			return LedgerSummary{}, fmt.Errorf("ledger line %d: %w", lineNo, err)
		}
		s.Lines++
		s.LinesByKind[kind]++

		pair := line[:len(clickID)+1+len(adID)] // click_id \t ad_id
		h := [2]uint64{maphash.Bytes(seedA, pair), maphash.Bytes(seedB, pair)}
		e, seen := entries[h]
		if seen && (e.kind != KindDuplicate || kind == KindDuplicate) {
			continue // the original is known already
		}
		if !seen {
			ad, ok := ads[string(adID)]
			if !ok {
				ad = string(adID)
				ads[ad] = ad
			}
			c, ok := countries[string(country)]
			if !ok {
				c = string(country)
				countries[c] = c
			}
			k := AdCountryMinute{AdID: ad, Country: c, Minute: ts - ((ts%minuteMs)+minuteMs)%minuteMs}
			ki, ok := keyIndex[k]
			if !ok {
				ki = int32(len(keys))
				keys = append(keys, k)
				keyIndex[k] = ki
			}
			e = entry{key: ki, group: -1}
		}
		e.kind = kind
		if kind == KindBurst {
			g := groupKey{key: e.key}
			if i := bytes.LastIndex(clickID, []byte(".b")); i >= 0 {
				g.name = string(clickID[i+2:])
			}
			gi, ok := groupIndex[g]
			if !ok {
				gi = int32(len(groups))
				groups = append(groups, g)
				groupIndex[g] = gi
			}
			e.group = gi
		}
		entries[h] = e
	}
	if err := sc.Err(); err != nil {
		return LedgerSummary{}, fmt.Errorf("read ledger: %w", err)
	}

	groupSize := make([]int64, len(groups))
	for _, e := range entries {
		s.Distinct++
		kind := e.kind
		if kind == KindDuplicate {
			kind = KindUnique
		}
		s.DistinctByKind[kind]++
		k := keys[e.key]
		switch kind {
		case KindBot:
			s.InvalidBot++
			s.Invalid[k]++
		case KindBurst:
			groupSize[e.group]++
		default:
			s.Valid++
			s.Expected[k]++
		}
	}
	for gi, n := range groupSize {
		k := keys[groups[gi].key]
		valid := min(n, BurstLimit)
		s.Valid += valid
		s.Expected[k] += valid
		if n > valid {
			s.InvalidBurst += n - valid
			s.Invalid[k] += n - valid
		}
	}
	s.DuplicateLines = s.Lines - s.Distinct
	return s, nil
}
