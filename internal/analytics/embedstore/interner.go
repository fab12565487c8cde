package embedstore

import (
	"bytes"
	"hash/maphash"
)

// interner numbers ad ids: each distinct id gets a small integer, reused once
// no row refers to it any more. It holds no pointers per name (the names are
// back to back in one byte slice, found through an open-addressing table), so
// a million ads cost the garbage collector nothing to scan.
type interner struct {
	seed    maphash.Seed
	data    []byte   // the names, back to back
	spans   []uint64 // by number: offset in data << 24 | length
	refs    []uint32 // rows referring to each number; 0: free
	free    []uint32
	slots   []uint64 // linear probing: low 32 bits of the hash << 32 | number+1; 0: empty
	live    int      // numbers in use
	garbage int      // bytes of data that belong to freed numbers
}

// maxNameLen bounds an ad id's length (see validate).
const maxNameLen = 1<<24 - 1

func newInterner() interner {
	return interner{seed: maphash.MakeSeed(), slots: make([]uint64, 1024)}
}

func (in *interner) hash(name string) uint32 {
	return uint32(maphash.String(in.seed, name))
}

func (in *interner) nameBytes(id uint32) []byte {
	sp := in.spans[id]
	off := sp >> 24
	return in.data[off : off+sp&maxNameLen]
}

func (in *interner) name(id uint32) string { return string(in.nameBytes(id)) }

func (in *interner) lookup(name string) (uint32, bool) {
	h := in.hash(name)
	mask := uint64(len(in.slots) - 1)
	for i := uint64(h) & mask; ; i = (i + 1) & mask {
		s := in.slots[i]
		if s == 0 {
			return 0, false
		}
		if uint32(s>>32) == h && string(in.nameBytes(uint32(s)-1)) == name {
			return uint32(s) - 1, true
		}
	}
}

// lookupBytes is lookup for a name in a byte slice.
func (in *interner) lookupBytes(name []byte) (uint32, bool) {
	h := uint32(maphash.Bytes(in.seed, name))
	mask := uint64(len(in.slots) - 1)
	for i := uint64(h) & mask; ; i = (i + 1) & mask {
		s := in.slots[i]
		if s == 0 {
			return 0, false
		}
		if uint32(s>>32) == h && bytes.Equal(in.nameBytes(uint32(s)-1), name) {
			return uint32(s) - 1, true
		}
	}
}

// add numbers a name that lookup did not find, with no reference yet.
func (in *interner) add(name string) uint32 {
	if 2*(in.live+1) > len(in.slots) {
		in.rehash(2 * len(in.slots))
	}
	var id uint32
	if n := len(in.free); n > 0 {
		id = in.free[n-1]
		in.free = in.free[:n-1]
	} else {
		id = uint32(len(in.spans))
		in.spans = append(in.spans, 0)
		in.refs = append(in.refs, 0)
	}
	in.spans[id] = uint64(len(in.data))<<24 | uint64(len(name))
	in.data = append(in.data, name...)
	in.live++
	in.insert(in.hash(name), id)
	return id
}

func (in *interner) insert(h, id uint32) {
	mask := uint64(len(in.slots) - 1)
	i := uint64(h) & mask
	for in.slots[i] != 0 {
		i = (i + 1) & mask
	}
	in.slots[i] = uint64(h)<<32 | uint64(id+1)
}

func (in *interner) rehash(n int) {
	old := in.slots
	in.slots = make([]uint64, n)
	for _, s := range old {
		if s != 0 {
			in.insert(uint32(s>>32), uint32(s)-1)
		}
	}
}

// ref adds d to the references of id; a number left with none is freed.
func (in *interner) ref(id uint32, d int) {
	in.refs[id] = uint32(int(in.refs[id]) + d)
	if in.refs[id] != 0 {
		return
	}
	in.remove(id)
	in.garbage += len(in.nameBytes(id))
	in.spans[id] = 0
	in.free = append(in.free, id)
	in.live--
	if in.garbage > 1<<20 && in.garbage > len(in.data)/2 {
		in.compact()
	}
}

// remove takes id out of the table, shifting later entries of its probe run
// back so that lookups need no tombstones.
func (in *interner) remove(id uint32) {
	mask := uint64(len(in.slots) - 1)
	name := in.nameBytes(id)
	h := in.hash(string(name))
	i := uint64(h) & mask
	for uint32(in.slots[i]) != id+1 {
		i = (i + 1) & mask
	}
	for j := i; ; {
		j = (j + 1) & mask
		s := in.slots[j]
		if s == 0 {
			in.slots[i] = 0
			return
		}
		// s may fill the hole at i unless its home slot lies in (i, j].
		home := (s >> 32) & mask
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			in.slots[i] = s
			i = j
		}
	}
}

// compact copies the names in use to a new byte slice.
func (in *interner) compact() {
	data := make([]byte, 0, len(in.data)-in.garbage)
	for id, sp := range in.spans {
		if in.refs[id] == 0 {
			continue
		}
		name := in.nameBytes(uint32(id))
		in.spans[id] = uint64(len(data))<<24 | sp&maxNameLen
		data = append(data, name...)
	}
	in.data, in.garbage = data, 0
}

// less orders two numbers by their names.
func (in *interner) less(a, b uint32) bool {
	return bytes.Compare(in.nameBytes(a), in.nameBytes(b)) < 0
}

// len is the bound of the numbers in use: every number is below it.
func (in *interner) len() int { return len(in.spans) }
