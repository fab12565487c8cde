package fpset

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// model is the oracle: the (tag, minute) pairs the set must hold, by tag.
type model map[uint64]map[uint32]bool

func (o model) insert(fp uint64, minute uint32) {
	k := key(fp)
	if o[k] == nil {
		o[k] = map[uint32]bool{}
	}
	o[k][minute] = true
}

// match returns the minutes in [lo, hi] held under fp's tag, sorted.
func (o model) match(fp uint64, lo, hi uint32) []uint32 {
	var got []uint32
	for m := range o[key(fp)] {
		if lo <= m && m <= hi {
			got = append(got, m)
		}
	}
	slices.Sort(got)
	return got
}

func (o model) expire(before uint32) int {
	n := 0
	for k, ms := range o {
		for m := range ms {
			if m < before {
				delete(ms, m)
				n++
			}
		}
		if len(ms) == 0 {
			delete(o, k)
		}
	}
	return n
}

func (o model) len() int {
	n := 0
	for _, ms := range o {
		n += len(ms)
	}
	return n
}

// matches returns what Match reports, sorted.
func matches(s *Set, fp uint64, lo, hi uint32) []uint32 {
	var got []uint32
	s.Match(fp, lo, hi, func(m uint32) bool {
		got = append(got, m)
		return true
	})
	slices.Sort(got)
	return got
}

// check verifies the invariants of the package comment.
func check(t *testing.T, s *Set) {
	t.Helper()
	if s.slots[len(s.slots)-1] != 0 {
		t.Fatal("last slot not empty")
	}
	if len(s.slots) < int(s.m)+1 {
		t.Fatalf("%d slots for %d homes", len(s.slots), s.m)
	}
	n, prev, run := 0, uint64(0), 0 // run: the first slot of the current cluster
	for p, v := range s.slots {
		if v == 0 {
			run = p + 1
			continue
		}
		n++
		if v <= prev {
			t.Fatalf("slot %d = %#x after %#x", p, v, prev)
		}
		prev = v
		if h := s.home(v); h > p || h < run {
			t.Fatalf("slot %d = %#x: home %d, cluster from %d", p, v, h, run)
		}
		if m := s.minute(v); m < s.lo || m > s.hi {
			t.Fatalf("slot %d: minute %d outside [%d, %d]", p, m, s.lo, s.hi)
		}
	}
	if n != s.n {
		t.Fatalf("%d entries in slots, n = %d", n, s.n)
	}
	if n > 0 && s.hi-s.lo > maxSpan {
		t.Fatalf("span [%d, %d] too wide", s.lo, s.hi)
	}
	if n > s.growAt {
		t.Fatalf("%d entries, growAt %d", n, s.growAt)
	}
	farN := 0
	for _, ms := range s.far {
		farN += len(ms)
	}
	if farN != s.farN {
		t.Fatalf("%d entries in far, farN = %d", farN, s.farN)
	}
}

// TestRandomized runs a long random mix of operations against the oracle and
// checks every answer exactly: Match must report the minutes in range of every
// pair held under the tag (no false negative, no stray minute), Expire must
// remove exactly the old pairs.
func TestRandomized(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start uint32 // first minute
		hint  int
	}{
		{"grow from empty", 29_000_000, 0},
		{"presized", 29_000_000, 20_000},
		{"minutes wrap 2^16", 3<<16 - 40, 0},
		{"near max uint32", math.MaxUint32 - 4000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			s, o := New(tc.hint), model{}
			var seen []uint64 // fingerprints inserted, to match and to reinsert
			hot := []uint64{0, 1, 0xffff, 1 << 16, 0x1_ffff, r.Uint64() | 0xffff, r.Uint64() &^ 0xffff}
			fingerprint := func() uint64 {
				switch x := r.IntN(100); {
				case x < 5: // equal tags: a few fingerprints, over and over
					return hot[r.IntN(len(hot))]
				case x < 10 && len(seen) > 0: // same tag as an earlier one, other low bits
					return seen[r.IntN(len(seen))]&^0xffff | r.Uint64N(1<<16)
				case x < 15: // crowd the first homes and the last (the spill tail)
					if r.IntN(2) == 0 {
						return r.Uint64N(1 << 40)
					}
					return math.MaxUint64 - r.Uint64N(1<<40)
				case x < 40 && len(seen) > 0: // again, maybe at another minute
					return seen[r.IntN(len(seen))]
				default:
					return r.Uint64()
				}
			}
			now := tc.start
			for round := range 60 {
				// A burst of inserts around now: mostly recent, some late, a few
				// far off (wild clocks) that exceed the span of the table.
				for range 1000 + r.IntN(3000) {
					fp := fingerprint()
					var m uint32
					switch x := r.IntN(1000); {
					case x == 0:
						m = now - 70_000
					case x == 1:
						m = min(now, math.MaxUint32-100_000) + 100_000
					case x < 50:
						m = now - r.Uint32N(70)
					default:
						m = now - r.Uint32N(12)
					}
					s.Insert(fp, m)
					o.insert(fp, m)
					seen = append(seen, fp)
				}
				check(t, s)
				if got, want := s.Len(), o.len(); got != want {
					t.Fatalf("round %d: Len = %d, want %d", round, got, want)
				}
				// Match fingerprints seen and unseen over windows of all sorts.
				for range 2000 {
					fp := fingerprint()
					if r.IntN(4) == 0 {
						fp = r.Uint64()
					}
					lo := now - r.Uint32N(80)
					hi := lo + r.Uint32N(80)
					if r.IntN(50) == 0 {
						lo, hi = 0, math.MaxUint32
					}
					if got, want := matches(s, fp, lo, hi), o.match(fp, lo, hi); !slices.Equal(got, want) {
						t.Fatalf("round %d: Match(%#x, %d, %d) = %v, want %v", round, fp, lo, hi, got, want)
					}
				}
				// Event time moves on; expire as the aggregator would, and now
				// and then far more (shrinking the table) or everything.
				now += uint32(r.IntN(3))
				before := now - 15
				switch r.IntN(10) {
				case 0:
					before = now - 2
				case 1:
					before = now + min(200_000, math.MaxUint32-now)
				}
				if got, want := s.Expire(before), o.expire(before); got != want {
					t.Fatalf("round %d: Expire(%d) = %d, want %d", round, before, got, want)
				}
				check(t, s)
				if got, want := s.Len(), o.len(); got != want {
					t.Fatalf("round %d: after Expire, Len = %d, want %d", round, got, want)
				}
			}
			// Every pair left is still found, each in its own one-minute window.
			for k, ms := range o {
				for m := range ms {
					if got := matches(s, k, m, m); !slices.Equal(got, []uint32{m}) {
						t.Fatalf("Match(%#x, %d, %d) = %v", k, m, m, got)
					}
				}
			}
		})
	}
}

// TestManyEqualTags piles thousands of entries on one tag at each end of the
// range: clusters far longer than the tail, through growth and expiry.
func TestManyEqualTags(t *testing.T) {
	const per = 3000
	s, r := New(0), rand.New(rand.NewPCG(15, 16))
	tags := []uint64{0, math.MaxUint64, 1 << 63}
	for i := range uint32(per) {
		for _, fp := range tags {
			s.Insert(fp, 1000+i)
		}
		for range 5 {
			s.Insert(r.Uint64(), 1000+i)
		}
	}
	check(t, s)
	for _, before := range []uint32{1000, 1000 + per/2} {
		if got, want := s.Expire(before), int(before-1000)*8; got != want {
			t.Fatalf("Expire(%d) = %d, want %d", before, got, want)
		}
		check(t, s)
		for _, fp := range tags {
			got := matches(s, fp, 0, math.MaxUint32)
			if len(got) != int(1000+per-before) || got[0] != before {
				t.Fatalf("after Expire(%d): Match(%#x) = %d minutes from %v", before, fp, len(got), got[:min(len(got), 1)])
			}
		}
	}
}

func TestMatchWindowAndStop(t *testing.T) {
	const fp, other = 0x1234_5678_9abc_def0, 0x1234_5678_9abd_0000
	s := New(0)
	for m := uint32(100); m < 110; m++ {
		s.Insert(fp, m)
		s.Insert(other, m)
	}
	s.Insert(fp, 100+70_000) // outside the table's span: held in the side map
	for _, tc := range []struct {
		lo, hi uint32
		stop   int // fn returns false on this call (1-based); 0: never
		want   []uint32
	}{
		{lo: 0, hi: math.MaxUint32, want: []uint32{100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 70_100}},
		{lo: 103, hi: 105, want: []uint32{103, 104, 105}},
		{lo: 109, hi: 109, want: []uint32{109}},
		{lo: 110, hi: 70_099, want: nil},
		{lo: 105, hi: 104, want: nil},
		{lo: 70_100, hi: 70_100, want: []uint32{70_100}},
		{lo: 0, hi: math.MaxUint32, stop: 1, want: []uint32{100}},
		{lo: 104, hi: 200, stop: 3, want: []uint32{104, 105, 106}},
		{lo: 0, hi: math.MaxUint32, stop: 10, want: []uint32{100, 101, 102, 103, 104, 105, 106, 107, 108, 109}},
	} {
		var got []uint32
		s.Match(fp, tc.lo, tc.hi, func(m uint32) bool {
			got = append(got, m)
			return len(got) != tc.stop
		})
		slices.Sort(got)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Match(%d, %d) stopping at call %d (-want +got):\n%s", tc.lo, tc.hi, tc.stop, diff)
		}
	}
	if got := matches(s, 0x1234_5678_9abb_ffff, 0, math.MaxUint32); got != nil {
		t.Errorf("Match of a neighbouring tag = %v, want none", got)
	}
	if got := matches(s, fp^0xffff, 100, 100); !slices.Equal(got, []uint32{100}) {
		t.Errorf("Match of a fingerprint differing in the low 16 bits = %v, want [100]", got)
	}
}

func TestInsertIdempotent(t *testing.T) {
	s := New(0)
	for range 3 {
		s.Insert(42<<16, 7)
		s.Insert(42<<16|5, 7) // same tag, same minute
		s.Insert(42<<16, 7+100_000)
	}
	if got := s.Len(); got != 2 {
		t.Errorf("Len = %d, want 2", got)
	}
}

func TestExpire(t *testing.T) {
	minutes := []uint32{1<<16 - 2, 1<<16 - 1, 1 << 16, 1<<16 + 1, 1<<16 + 2}
	for _, tc := range []struct {
		before uint32
		old    int // how many of minutes are before it
	}{
		{0, 0}, {1<<16 - 2, 0}, {1<<16 - 1, 1}, {1 << 16, 2}, {1<<16 + 2, 4}, {1<<16 + 3, 5}, {math.MaxUint32, 5},
	} {
		t.Run(fmt.Sprint(tc.before), func(t *testing.T) {
			s, r := New(0), rand.New(rand.NewPCG(9, 10))
			const fp = 7 << 16
			for _, m := range minutes {
				s.Insert(fp, m)
			}
			want := tc.old
			for i := range 300 {
				f := r.Uint64()
				for _, m := range minutes {
					s.Insert(f, m)
				}
				want += tc.old
				if i%2 == 0 { // a tag of its own, crowding the first homes
					s.Insert(uint64(i)<<16|0xbeef, minutes[0])
					want += min(tc.old, 1)
				}
			}
			n := s.Len()
			if got := s.Expire(tc.before); got != want {
				t.Fatalf("Expire = %d, want %d", got, want)
			}
			check(t, s)
			if got := s.Len(); got != n-want {
				t.Fatalf("Len = %d, want %d", got, n-want)
			}
			var left []uint32
			for _, m := range minutes {
				if m >= tc.before {
					left = append(left, m)
				}
			}
			if diff := cmp.Diff(left, matches(s, fp, 0, math.MaxUint32)); diff != "" {
				t.Errorf("minutes left (-want +got):\n%s", diff)
			}
			if got := s.Expire(tc.before); got != 0 {
				t.Errorf("second Expire = %d, want 0", got)
			}
		})
	}
}

// TestMinuteWrap slides a window of minutes across several multiples of 2^16,
// where the stored minute bits wrap, checking each minute reads back as itself.
func TestMinuteWrap(t *testing.T) {
	for _, start := range []uint32{1<<16 - 20, 5<<16 - 1, 1<<31 - 10, math.MaxUint32 - 30} {
		s := New(0)
		end := start + 25
		for m := start; ; m++ {
			s.Insert(uint64(m)<<20, m)
			s.Insert(1<<40, m)
			s.Expire(m - min(m, 5)) // keep the last 6 minutes
			for d := range uint32(6) {
				if d > m-start {
					break
				}
				if got := matches(s, uint64(m-d)<<20, 0, math.MaxUint32); !slices.Equal(got, []uint32{m - d}) {
					t.Fatalf("start %d, now %d: Match of minute %d = %v", start, m, m-d, got)
				}
			}
			if got := matches(s, 1<<40, m-3, m); len(got) != min(4, int(m-start)+1) || got[len(got)-1] != m {
				t.Fatalf("start %d, now %d: Match in [%d, %d] = %v", start, m, m-3, m, got)
			}
			check(t, s)
			if m == end {
				break
			}
		}
	}
}

// TestSpan crosses the limit of 2^16−1 minutes within the table.
func TestSpan(t *testing.T) {
	s := New(0)
	const base = 29_000_000
	s.Insert(1<<50, base)
	s.Insert(2<<50, base+maxSpan)   // the widest span the table holds
	s.Insert(3<<50, base+maxSpan+1) // one too many: side map
	s.Insert(4<<50, base-1)         // side map
	check(t, s)
	if s.farN != 2 {
		t.Errorf("side map holds %d entries, want 2", s.farN)
	}
	for i, m := range []uint32{base, base + maxSpan, base + maxSpan + 1, base - 1} {
		if got := matches(s, uint64(i+1)<<50, 0, math.MaxUint32); !slices.Equal(got, []uint32{m}) {
			t.Errorf("Match(%d<<50) = %v, want [%d]", i+1, got, m)
		}
	}
	if got := s.Expire(base); got != 1 {
		t.Errorf("Expire(base) = %d, want 1", got)
	}
	if got := s.Expire(base + 1); got != 1 {
		t.Errorf("Expire(base+1) = %d, want 1", got)
	}
	s.Insert(3<<50, base+maxSpan+1) // now it fits; the side-map copy must not count twice
	if got := s.Len(); got != 2 {
		t.Errorf("Len = %d, want 2", got)
	}
	check(t, s)
}

// TestSlidingWindow moves a ten-minute window across more than 2^16 minutes, as
// the aggregator does: the table's span follows it, and the side map stays unused.
func TestSlidingWindow(t *testing.T) {
	s, r := New(0), rand.New(rand.NewPCG(13, 14))
	const start = 1_000_000
	var fps [10]uint64 // fps[m%10] was inserted at minute m
	for m := uint32(start); m < start+70_000; m++ {
		fps[m%10] = r.Uint64()
		s.Insert(fps[m%10], m)
		if m < start+9 {
			continue
		}
		want := 1
		if m == start+9 {
			want = 0
		}
		if got := s.Expire(m - 9); got != want {
			t.Fatalf("minute %d: Expire removed %d, want %d", m, got, want)
		}
		if got := matches(s, fps[(m-9)%10], 0, math.MaxUint32); !slices.Equal(got, []uint32{m - 9}) {
			t.Fatalf("minute %d: oldest entry reads %v, want [%d]", m, got, m-9)
		}
		if s.farN != 0 {
			t.Fatalf("minute %d: side map holds %d entries", m, s.farN)
		}
	}
}

// TestMemory checks the bytes per entry of a set that grew to its size, and of one
// shrunk by Expire.
func TestMemory(t *testing.T) {
	n := 2_000_000
	if testing.Short() {
		n = 200_000
	}
	s, r := New(0), rand.New(rand.NewPCG(3, 4))
	lo, hi := math.Inf(1), 0.0
	for i := range n {
		s.Insert(r.Uint64(), uint32(i*10/n))
		if i >= 10_000 {
			b := float64(s.Bytes()) / float64(s.Len())
			lo, hi = min(lo, b), max(hi, b)
		}
	}
	t.Logf("%d entries: %.2f to %.2f bytes per entry from 10k entries on", n, lo, hi)
	if lo < 9.9 || hi > 14 {
		t.Errorf("bytes per entry between %.2f and %.2f, want within [9.9, 14]", lo, hi)
	}
	s.Expire(9) // leaves a tenth
	check(t, s)
	if b := float64(s.Bytes()) / float64(s.Len()); b > 14 {
		t.Errorf("after Expire: %d entries, %.2f bytes per entry, want at most 14", s.Len(), b)
	}
	s.Expire(10)
	if s.Len() != 0 || s.Bytes() > 1024 {
		t.Errorf("after expiring all: Len %d, Bytes %d", s.Len(), s.Bytes())
	}

	// A set made for 100k entries holds them without growing, and never
	// shrinks below that size.
	s = New(100_000)
	size := s.Bytes()
	for i := range 100_000 {
		s.Insert(r.Uint64(), uint32(i/1000)) // minutes 0 to 99
	}
	if s.Bytes() != size {
		t.Errorf("New(100_000) grew from %d to %d bytes holding 100k entries", size, s.Bytes())
	}
	for i := range 200_000 {
		s.Insert(r.Uint64(), uint32(100+i/1000)) // minutes 100 to 299
	}
	for _, before := range []uint32{299, 300} { // leave 1000, then none
		s.Expire(before)
		check(t, s)
		if s.Bytes() != size {
			t.Errorf("New(100_000) after Expire(%d): %d entries, %d bytes, want %d bytes", before, s.Len(), s.Bytes(), size)
		}
	}
}

// TestFalsePositives measures how often an absent fingerprint matches. The rate
// should be about entries/2^48; a set keeping fewer bits of the tag fails.
func TestFalsePositives(t *testing.T) {
	const entries, queries = 1 << 20, 1 << 22
	r := rand.New(rand.NewPCG(5, 6))
	s := New(entries)
	for range entries {
		s.Insert(r.Uint64(), 100)
	}
	hits := 0
	for range queries {
		s.Match(r.Uint64(), 0, math.MaxUint32, func(uint32) bool { hits++; return true })
	}
	// Expected 2^20·2^22/2^48 ≈ 0.016 (32-bit tags: about 1000).
	t.Logf("%d false positives in %d queries of %d entries", hits, queries, entries)
	if hits > 3 {
		t.Errorf("%d false positives in %d queries of %d entries, want at most 3", hits, queries, entries)
	}
	// Every bit of the tag counts: flip one of the top 48 and nothing matches.
	for range 1000 {
		fp := r.Uint64()
		s.Insert(fp, 200)
		if got := matches(s, fp^1<<(16+r.IntN(48)), 200, 200); got != nil {
			t.Fatalf("a one-bit change of %#x matched %v", fp, got)
		}
	}
}

func TestAllocs(t *testing.T) {
	s, r := New(100_000), rand.New(rand.NewPCG(7, 8))
	fps := make([]uint64, 1000)
	for i := range fps {
		fps[i] = r.Uint64()
		s.Insert(fps[i], 5)
	}
	i, found := 0, 0
	if n := testing.AllocsPerRun(1000, func() {
		s.Insert(r.Uint64(), 6)
		s.Match(fps[i%len(fps)], 5, 6, func(uint32) bool { found++; return true })
		i++
	}); n != 0 {
		t.Errorf("Insert+Match: %v allocations, want 0", n)
	}
	if found == 0 {
		t.Error("no match found")
	}
}
