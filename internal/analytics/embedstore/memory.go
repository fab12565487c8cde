package embedstore

import (
	"cmp"
	"slices"
	"sort"
)

// table is the in-memory copy of every row, the structure queries read. It
// is not safe for concurrent use; Store guards it.
//
// Rows are grouped in blocks, one per minute, kept in a slice sorted by
// minute, so a time range is a contiguous run of blocks. Ad ids and countries
// are interned to small integers; an ad's number is freed when its last row
// is deleted.
type table struct {
	blocks []*block // ascending minute
	ads    interner
	// countries are never freed: there are a few hundred of them.
	countryIDs   map[string]uint16
	countryNames []string
	rows         int
	// mergeMin is the delta size past which a block may be merged; tests
	// lower it to merge often.
	mergeMin int
}

// block holds the rows of one minute as parallel columns (a row is an index).
// The first rows, [0, sorted), are in (ad, country) order: a lookup is a
// binary search, and Top, adding clicks into an array indexed by ad number,
// walks that array forwards, which the CPU's prefetcher follows. The rows after
// them are the delta, in arrival order, chained per ad from head through next.
// When the delta grows past a fraction of the block it is merged into the
// sorted rows (see needsMerge), so it stays small.
type block struct {
	minute  int64 // Unix time / 60
	ad      []uint32
	country []uint16
	clicks  []int64
	other   [][4]int64 // bot, ip rate, duplicates, too late
	sorted  int
	head    map[uint32]int32 // ad → its last row in the delta
	next    []int32          // by delta row: the ad's previous delta row, or -1
	sum     totals           // of every row, for Quality over all ads
}

// totals are the five counters of a row, in the order of the on-disk value.
type totals [5]int64

func newTable() *table {
	return &table{ads: newInterner(), countryIDs: map[string]uint16{}, mergeMin: 1024}
}

// blockRange returns the blocks of the minutes [lo, hi).
func (t *table) blockRange(lo, hi int64) []*block {
	i := sort.Search(len(t.blocks), func(i int) bool { return t.blocks[i].minute >= lo })
	j := i + sort.Search(len(t.blocks)-i, func(k int) bool { return t.blocks[i+k].minute >= hi })
	return t.blocks[i:j]
}

// block returns the block of minute m, adding it if needed.
func (t *table) block(m int64) *block {
	n := len(t.blocks)
	if n > 0 && t.blocks[n-1].minute == m { // the common case: the newest minute
		return t.blocks[n-1]
	}
	i := sort.Search(n, func(i int) bool { return t.blocks[i].minute >= m })
	if i < n && t.blocks[i].minute == m {
		return t.blocks[i]
	}
	b := &block{minute: m}
	t.blocks = slices.Insert(t.blocks, i, b)
	return b
}

func (t *table) countryID(c string) (uint16, bool) {
	id, ok := t.countryIDs[c]
	return id, ok
}

func (t *table) addCountry(c string) uint16 {
	cid, ok := t.countryIDs[c]
	if !ok {
		cid = uint16(len(t.countryNames))
		t.countryIDs[c] = cid
		t.countryNames = append(t.countryNames, c)
	}
	return cid
}

// set writes the totals of (ad, country, minute), replacing any earlier ones,
// and returns the row's block. Callers check that a new country fits (see
// Store.checkCountries).
func (t *table) set(ad, country string, m int64, v totals) *block {
	b := t.block(m)
	cid := t.addCountry(country)
	id, ok := t.ads.lookup(ad)
	if ok {
		if i := b.find(id, cid); i >= 0 {
			old := b.totals(i)
			for k := range v {
				b.sum[k] += v[k] - old[k]
			}
			b.clicks[i] = v[0]
			b.other[i] = [4]int64{v[1], v[2], v[3], v[4]}
			return b
		}
	} else {
		id = t.ads.add(ad)
	}
	t.ads.ref(id, 1)
	t.rows++
	b.appendRow(id, cid, v)
	if b.head == nil {
		b.head = map[uint32]int32{}
	}
	h, ok := b.head[id]
	if !ok {
		h = -1
	}
	b.head[id] = int32(len(b.ad) - 1)
	b.next = append(b.next, h)
	return b
}

// loadRow adds a row read from disk, where keys are unique, without looking
// for an earlier row of its key. The row is left out of the delta's chains:
// the caller replaces the block with its merged copy before anything else
// reads it.
func (t *table) loadRow(ad, country []byte, m int64, v totals) *block {
	b := t.block(m)
	cid, ok := t.countryIDs[string(country)]
	if !ok {
		cid = t.addCountry(string(country))
	}
	id, ok := t.ads.lookupBytes(ad)
	if !ok {
		id = t.ads.add(string(ad))
	}
	t.ads.ref(id, 1)
	t.rows++
	b.appendRow(id, cid, v)
	return b
}

func (b *block) appendRow(id uint32, cid uint16, v totals) {
	if n := len(b.ad); n == cap(b.ad) {
		// Grow by an eighth, not append's quarter or more: a merged block,
		// allocated to size, that gets a few late rows stays nearly full.
		g := n/8 + 16
		b.ad = slices.Grow(b.ad, g)
		b.country = slices.Grow(b.country, g)
		b.clicks = slices.Grow(b.clicks, g)
		b.other = slices.Grow(b.other, g)
	}
	b.ad = append(b.ad, id)
	b.country = append(b.country, cid)
	b.clicks = append(b.clicks, v[0])
	b.other = append(b.other, [4]int64{v[1], v[2], v[3], v[4]})
	for k := range v {
		b.sum[k] += v[k]
	}
}

func (b *block) totals(i int) totals {
	o := b.other[i]
	return totals{b.clicks[i], o[0], o[1], o[2], o[3]}
}

// sortedRange returns the sorted rows of ad id: [i, j).
func (b *block) sortedRange(id uint32) (i, j int) {
	ads := b.ad[:b.sorted]
	i, _ = slices.BinarySearch(ads, id)
	for j = i; j < len(ads) && ads[j] == id; j++ {
	}
	return i, j
}

// find returns the row of (ad, country), or -1.
func (b *block) find(id uint32, cid uint16) int {
	i, j := b.sortedRange(id)
	for ; i < j; i++ {
		if b.country[i] == cid {
			return i
		}
	}
	if h, ok := b.head[id]; ok {
		for i := int(h); i >= 0; i = int(b.next[i-b.sorted]) {
			if b.country[i] == cid {
				return i
			}
		}
	}
	return -1
}

// eachRow calls fn with every row of ad id.
func (b *block) eachRow(id uint32, fn func(i int)) {
	i, j := b.sortedRange(id)
	for ; i < j; i++ {
		fn(i)
	}
	if h, ok := b.head[id]; ok {
		for i := int(h); i >= 0; i = int(b.next[i-b.sorted]) {
			fn(i)
		}
	}
}

// needsMerge reports whether b's delta has grown enough to be merged: past
// mergeMin rows and an eighth of the sorted rows. So a row is moved a few
// times on average as its block grows, and the delta is at most an eighth of
// a large block.
func (t *table) needsMerge(b *block) bool {
	d := len(b.ad) - b.sorted
	return d > t.mergeMin && d > b.sorted/8
}

// merged returns a block holding b's rows all sorted. It does not change b, so
// readers may go on reading b meanwhile; the caller swaps it in.
func (b *block) merged() *block {
	d := make([]int32, len(b.ad)-b.sorted)
	for k := range d {
		d[k] = int32(b.sorted + k)
	}
	key := func(i int32) uint64 { return uint64(b.ad[i])<<16 | uint64(b.country[i]) }
	slices.SortFunc(d, func(x, y int32) int { return cmp.Compare(key(x), key(y)) })
	n := len(b.ad)
	nb := &block{
		minute:  b.minute,
		ad:      make([]uint32, 0, n),
		country: make([]uint16, 0, n),
		clicks:  make([]int64, 0, n),
		other:   make([][4]int64, 0, n),
		sorted:  n,
		sum:     b.sum,
	}
	take := func(i int) {
		nb.ad = append(nb.ad, b.ad[i])
		nb.country = append(nb.country, b.country[i])
		nb.clicks = append(nb.clicks, b.clicks[i])
		nb.other = append(nb.other, b.other[i])
	}
	i := 0
	for _, k := range d {
		for ; i < b.sorted && key(int32(i)) < key(k); i++ {
			take(i)
		}
		take(int(k))
	}
	for ; i < b.sorted; i++ {
		take(i)
	}
	return nb
}

// replace swaps in nb, the merged copy of the block of the same minute.
func (t *table) replace(nb *block) {
	i := sort.Search(len(t.blocks), func(i int) bool { return t.blocks[i].minute >= nb.minute })
	t.blocks[i] = nb
}

// deleteBefore drops the blocks of minutes before m and returns the number of
// rows they held.
func (t *table) deleteBefore(m int64) int {
	i := sort.Search(len(t.blocks), func(i int) bool { return t.blocks[i].minute >= m })
	n := 0
	for _, b := range t.blocks[:i] {
		for _, id := range b.ad {
			t.ads.ref(id, -1)
		}
		n += len(b.ad)
	}
	t.blocks = slices.Delete(t.blocks, 0, i)
	t.rows -= n
	return n
}
