// Package fpset is a compact in-memory set of click fingerprints, the first step
// of exact click deduplication within a horizon of event time.
//
// An entry is a 64-bit fingerprint (the caller's hash of ad_id and click_id) and
// the event-time minute of the click (Unix minutes). The set keeps only the top
// 48 bits of the fingerprint, its tag (the low 16 bits are not used), so Match
// reports every entry inserted with that fingerprint (never a false negative)
// and, rarely, entries of other fingerprints with the same tag. The caller makes
// deduplication exact by checking each match against a store of the full ids.
// With n entries and a good hash, a lookup of an absent fingerprint matches with
// probability about n/2^48 (8e-7 at 220M entries). Formally the set holds
// distinct (tag, minute) pairs: inserting a pair it holds is a no-op, and Len
// and Expire count pairs.
//
// # Layout
//
// Entries live in one array of uint64 slots, each tag<<16 | minute mod 2^16, with
// 0 meaning empty (a tag of zero is stored as 1). The home slot of an entry is
// tag·m/2^48 for m home slots (fastrange, so m need not be a power of two), which
// grows with the tag. The array is an ordered linear-probing table (Amble and
// Knuth, 1974), with these invariants:
//
//   - the non-empty slots increase strictly along the array;
//   - an entry is at or after its home slot, and every slot from its home to it
//     is occupied;
//   - the last slot of the array is empty.
//
// Together they put each entry at max(home, position of the previous entry + 1):
// the layout depends on the entries only, not on the order they came in. A
// lookup scans from the home slot to the first slot greater than its tag (about
// 1 + α/(2(1−α)) slots at load α, hit or miss), Expire compacts the array in one
// sequential pass without tombstones, and a resize is a sequential merge into
// the new array.
// Entries pushed past the last home slot spill into a tail of extra slots, and the
// empty last slot ends every scan.
//
// # Memory
//
// The table grows by 4/3 when its load would pass 0.8, to 0.6, and shrinks to 0.6
// after an Expire leaves it below 0.25 (never below the size New made), so a
// set that grew to its size holds between 10 and 13.3 bytes per entry, plus a tail
// of at most 256 slots. (Above 0.8, lookups and inserts cost markedly more: see
// BenchmarkLoad.) Resizing copies the whole table, with both arrays live until the
// next garbage collection; pass the expected peak to New to avoid it: a set made by
// New(n) holds n entries at 10 bytes each.
//
// # Minutes
//
// A slot keeps the minute modulo 2^16 and is read relative to the newest minute
// inserted, so the minutes in the table may span at most 2^16−1 minutes (45
// days). An entry that would stretch the span further (a clock far off, a replay
// of old data) goes to a side map holding full minutes instead, so it is still
// found; Expire drains both. The side map costs tens of bytes per entry and is
// meant to stay empty or nearly so.
//
// A Set is not safe for concurrent use: one goroutine owns it (one per partition).
package fpset

import (
	"math/bits"
	"slices"
)

const (
	minuteBits = 16
	minuteMask = 1<<minuteBits - 1
	maxSpan    = minuteMask // the largest hi−lo of the minutes in the table

	minHomes = 8
	maxTail  = 256
)

// Set is a set of (fingerprint tag, minute) pairs. The zero Set is not usable;
// call New.
type Set struct {
	slots  []uint64 // m home slots, then a tail; see the package comment
	m      uint64   // number of home slots
	n      int      // entries in slots
	growAt int      // grow before the insert that would make n exceed this
	minM   uint64   // the number of home slots New chose; never shrink below

	// lo and hi bound the minutes in slots (when n > 0), hi−lo ≤ maxSpan. Slots are
	// read relative to hi.
	lo, hi uint32

	far  map[uint64][]uint32 // entries outside the span of slots: tag<<16 → minutes
	farN int                 // entries in far
}

// New returns an empty set with room for sizeHint entries before it first grows.
func New(sizeHint int) *Set {
	m := uint64(minHomes)
	if sizeHint > 0 {
		m = max(m, homesFor(sizeHint))
	}
	s := &Set{minM: m}
	s.alloc(m)
	return s
}

// homesFor returns the number of home slots that n entries fill to 0.8.
func homesFor(n int) uint64 {
	return uint64(n)*5/4 + 1
}

// tailFor is the number of slots after the m home slots: room for the entries
// that spill past the last home, plus the empty last slot. Even at load 0.9 the
// spill of random tags is rarely over 40 slots; more is handled by extend.
func tailFor(m uint64) int {
	return int(min(m/32+16, maxTail))
}

// alloc replaces the slots by an empty table of m home slots.
func (s *Set) alloc(m uint64) {
	s.m = m
	s.slots = make([]uint64, int(m)+tailFor(m))
	s.growAt = int(m * 4 / 5)
}

// key returns the slot value of the entry (fp, minute) with the minute bits zero.
func key(fp uint64) uint64 {
	k := fp &^ minuteMask
	if k == 0 {
		k = 1 << minuteBits
	}
	return k
}

// home returns the home slot of the slot value v.
func (s *Set) home(v uint64) int {
	h, _ := bits.Mul64(v&^minuteMask, s.m) // (tag<<16)·m / 2^64
	return int(h)
}

// minute decodes the minute of slot value v.
func (s *Set) minute(v uint64) uint32 {
	return s.hi - uint32(uint16(s.hi)-uint16(v))
}

// Insert adds the entry (fp, minute). It is a no-op if the set holds an entry of
// the same tag and minute.
func (s *Set) Insert(fp uint64, minute uint32) {
	k := key(fp)
	switch {
	case s.n == 0:
		s.lo, s.hi = minute, minute
	case minute > s.hi:
		if minute-s.lo > maxSpan {
			s.insertFar(k, minute)
			return
		}
		s.hi = minute
	case minute < s.lo:
		if s.hi-minute > maxSpan {
			s.insertFar(k, minute)
			return
		}
		s.lo = minute
	}
	if s.farN > 0 && slices.Contains(s.far[k], minute) {
		return // held in far since before the span of slots reached it
	}
	s.insert(k | uint64(minute&minuteMask))
}

// insert adds the slot value v to the table.
func (s *Set) insert(v uint64) {
	if s.n >= s.growAt {
		s.resize(s.m + s.m/3 + 1)
	}
	slots := s.slots
	p := s.home(v)
	for slots[p]-1 < v-1 { // non-empty and smaller than v
		p++
	}
	if slots[p] == v {
		return
	}
	e := p
	for slots[e] != 0 {
		e++
	}
	if e == len(slots)-1 { // keep the last slot empty
		slots = s.extend()
	}
	copy(slots[p+1:e+1], slots[p:e])
	slots[p] = v
	s.n++
}

// extend doubles the tail of the array (at least), for the rare cluster that
// spills past it: many entries of one tag, or of tags at the top of the range.
func (s *Set) extend() []uint64 {
	tail := len(s.slots) - int(s.m)
	slots := make([]uint64, len(s.slots)+max(tail, tailFor(s.m)))
	copy(slots, s.slots)
	s.slots = slots
	return slots
}

// resize moves the entries to a table of m home slots, in one sequential pass.
func (s *Set) resize(m uint64) {
	old := s.slots
	s.alloc(m)
	w := 0 // the first slot after the last entry placed
	for _, v := range old {
		if v == 0 {
			continue
		}
		p := max(s.home(v), w)
		if p >= len(s.slots)-1 {
			s.extend()
		}
		s.slots[p] = v
		w = p + 1
	}
}

func (s *Set) insertFar(k uint64, minute uint32) {
	if slices.Contains(s.far[k], minute) {
		return
	}
	if s.far == nil {
		s.far = make(map[uint64][]uint32)
	}
	s.far[k] = append(s.far[k], minute)
	s.farN++
}

// Match calls fn(minute) for every entry whose tag equals the tag of fp and whose
// minute is in [lo, hi], in no particular order, until fn returns false.
func (s *Set) Match(fp uint64, lo, hi uint32, fn func(minute uint32) bool) {
	k := key(fp)
	if s.n > 0 && lo <= s.hi && hi >= s.lo {
		slots := s.slots
		p := s.home(k)
		for slots[p]-1 < k-1 { // non-empty and of a smaller tag
			p++
		}
		for ; slots[p]&^minuteMask == k; p++ {
			m := s.minute(slots[p])
			if lo <= m && m <= hi && !fn(m) {
				return
			}
		}
	}
	if s.farN > 0 {
		for _, m := range s.far[k] {
			if lo <= m && m <= hi && !fn(m) {
				return
			}
		}
	}
}

// Expire removes every entry whose minute is less than before and returns how
// many it removed. It returns at once if no entry is that old, and clears the
// table if every entry is; otherwise it sweeps the whole table, at 2 to 3 ns per
// slot (0.6 s for 220M entries).
func (s *Set) Expire(before uint32) int {
	removed := 0
	if s.farN > 0 {
		removed += s.expireFar(before)
	}
	switch {
	case s.n == 0 || before <= s.lo:
	case before > s.hi:
		removed += s.n
		s.n = 0
		if s.m > s.minM {
			s.alloc(s.minM)
		} else {
			clear(s.slots)
		}
	default:
		removed += s.sweep(before)
		if s.m > s.minM && uint64(s.n) < s.m/4 {
			s.resize(max(s.minM, uint64(s.n)*5/3+1))
		}
	}
	return removed
}

// sweep removes the entries of the table older than before, lo < before ≤ hi.
// Like resize, it places each entry left at max(home, previous position + 1),
// which for the entries of a cluster with no removal before them is where they
// are, and never after where it reads them.
//
// The loop has no branch but its own: the compiler turns the ifs into
// conditional moves. Empty and expired slots come at random, and branching on
// them costs about 40% more in mispredictions.
func (s *Set) sweep(before uint32) int {
	hi16, maxAge := uint16(s.hi), uint32(s.hi-before) // maxAge < 2^16
	slots, m := s.slots, s.m
	removed, w := 0, 0 // w: the first slot after the last entry kept
	for r := range slots {
		v := slots[r]
		h, _ := bits.Mul64(v&^minuteMask, m)
		p := max(int(h), w)                                 // where v goes if kept
		full := int((v | -v) >> 63)                         // 1 if v is an entry
		old := int((maxAge - uint32(hi16-uint16(v))) >> 31) // 1 if v's age > maxAge
		keep := full &^ old
		removed += full & old
		slots[r] = 0
		t := r
		if keep != 0 {
			t = p
		}
		slots[t] = v * uint64(keep)
		if keep != 0 {
			w = p + 1
		}
	}
	s.n -= removed
	s.lo = before
	return removed
}

func (s *Set) expireFar(before uint32) int {
	removed := 0
	for k, ms := range s.far {
		kept := slices.DeleteFunc(ms, func(m uint32) bool { return m < before })
		removed += len(ms) - len(kept)
		if len(kept) == 0 {
			delete(s.far, k)
		} else {
			s.far[k] = kept
		}
	}
	s.farN -= removed
	if s.farN == 0 {
		s.far = nil
	}
	return removed
}

// Len returns the number of entries.
func (s *Set) Len() int { return s.n + s.farN }

// Bytes returns the memory the set holds: its table, and an estimate for the side
// map of entries outside the table's span of minutes.
func (s *Set) Bytes() int {
	const farEntry, farKey = 4, 64 // a minute; a map entry with its slice header and overhead
	return 8*cap(s.slots) + farKey*len(s.far) + farEntry*s.farN
}
