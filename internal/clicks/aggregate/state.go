package aggregate

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/cespare/xxhash/v2"

	"github.com/pedal-project/pedal/internal/clicks"
)

// State store layout, all keys prefixed by kind and partition, minutes as
// big-endian Unix minutes so that a range of minutes is a range of keys:
//
//	'o' part                          → next offset u64 | has max u8 | max event time i64 (ms)
//	'p' part                          → next offset whose state the analytics store holds
//	'w' part minute ad_id 0 country   → clicks, bot, ip_rate, duplicates, too_late (uvarints)
//	'i' part minute bucket(u16)       → ip counters of minutes that left memory: (ad_id, ip, count)…
//	'd' part minute fingerprint       → entries of counted clicks: (ad_id, click_id, ts, bot, ip)…
//	'e' part                          → epoch of the last takeover from a consumer group (u64)
//
// The ip counters of the minutes still in memory are not stored: they are the
// number of deduplication entries of the minute with that ad and ip that are not
// bots, and are rebuilt from those at start.
const (
	kindMeta      = 'o'
	kindPublished = 'p'
	kindWindow    = 'w'
	kindIP        = 'i'
	kindDedup     = 'd'
	kindEpoch     = 'e'
)

var errCorrupt = errors.New("aggregator state: corrupt value")

func partKey(kind byte, part int32) []byte {
	return binary.BigEndian.AppendUint32([]byte{kind}, uint32(part))
}

// minuteKey is the first key of kind in part at minute m.
func minuteKey(kind byte, part int32, m uint32) []byte {
	return binary.BigEndian.AppendUint32(partKey(kind, part), m)
}

func windowKey(dst []byte, part int32, k winKey) []byte {
	dst = append(dst[:0], kindWindow)
	dst = binary.BigEndian.AppendUint32(dst, uint32(part))
	dst = binary.BigEndian.AppendUint32(dst, k.minute)
	dst = append(dst, k.ad...)
	dst = append(dst, 0)
	return append(dst, k.country...)
}

func parseWindowKey(key []byte) (winKey, bool) {
	if len(key) < 9 {
		return winKey{}, false
	}
	m := binary.BigEndian.Uint32(key[5:9])
	rest := key[9:]
	for i, c := range rest {
		if c == 0 {
			return winKey{ad: string(rest[:i]), country: string(rest[i+1:]), minute: m}, true
		}
	}
	return winKey{}, false
}

// ipBuckets is the number of values a minute's ip counters are spread over.
const ipBuckets = 4096

func ipBucketOf(ad string, ip netip.Addr) uint16 {
	var buf [clicks.MaxIDLen + 17]byte
	b := append(buf[:0], ad...)
	b = append(b, 0)
	b = append(b, ip.AsSlice()...)
	return uint16(xxhash.Sum64(b) % ipBuckets)
}

func ipBucketKey(dst []byte, part int32, minute uint32, bucket uint16) []byte {
	dst = append(dst[:0], kindIP)
	dst = binary.BigEndian.AppendUint32(dst, uint32(part))
	dst = binary.BigEndian.AppendUint32(dst, minute)
	return binary.BigEndian.AppendUint16(dst, bucket)
}

func appendIP(dst []byte, ip netip.Addr) []byte {
	a := ip.AsSlice()
	dst = append(dst, byte(len(a)))
	return append(dst, a...)
}

func readIP(b []byte) (netip.Addr, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return netip.Addr{}, nil, errCorrupt
	}
	n := int(b[0])
	if n == 0 {
		return netip.Addr{}, b[1:], nil
	}
	ip, ok := netip.AddrFromSlice(b[1 : 1+n])
	if !ok {
		return netip.Addr{}, nil, errCorrupt
	}
	return ip, b[1+n:], nil
}

func readBytes(b []byte) ([]byte, []byte, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < l {
		return nil, nil, errCorrupt
	}
	return b[n : n+int(l)], b[n+int(l):], nil
}

// appendIPCount appends one counter to an ip bucket value.
func appendIPCount(dst []byte, ad string, ip netip.Addr, n uint32) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ad)))
	dst = append(dst, ad...)
	dst = appendIP(dst, ip)
	return binary.AppendUvarint(dst, uint64(n))
}

// forEachIPCount calls fn for every counter of an ip bucket value.
func forEachIPCount(v []byte, fn func(ad []byte, ip netip.Addr, n uint32)) error {
	for len(v) > 0 {
		ad, rest, err := readBytes(v)
		if err != nil {
			return err
		}
		ip, rest, err := readIP(rest)
		if err != nil {
			return err
		}
		n, l := binary.Uvarint(rest)
		if l <= 0 {
			return errCorrupt
		}
		fn(ad, ip, uint32(n))
		v = rest[l:]
	}
	return nil
}

func dedupStoreKey(dst []byte, part int32, k dedupKey) []byte {
	dst = append(dst[:0], kindDedup)
	dst = binary.BigEndian.AppendUint32(dst, uint32(part))
	dst = binary.BigEndian.AppendUint32(dst, k.minute)
	return binary.BigEndian.AppendUint64(dst, k.fp)
}

func (w *window) encode(dst []byte) []byte {
	for _, v := range [...]int64{w.clicks, w.bot, w.ipRate, w.dups, w.late} {
		dst = binary.AppendUvarint(dst, uint64(v))
	}
	return dst
}

func (w *window) decode(b []byte) error {
	for _, v := range [...]*int64{&w.clicks, &w.bot, &w.ipRate, &w.dups, &w.late} {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return errCorrupt
		}
		*v, b = int64(x), b[n:]
	}
	return nil
}

type meta struct {
	next   int64
	hasMax bool
	maxTS  int64
}

func (m meta) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(m.next))
	if m.hasMax {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return binary.BigEndian.AppendUint64(b, uint64(m.maxTS))
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) != 17 {
		return meta{}, errCorrupt
	}
	return meta{
		next:   int64(binary.BigEndian.Uint64(b)),
		hasMax: b[8] == 1,
		maxTS:  int64(binary.BigEndian.Uint64(b[9:])),
	}, nil
}

// entry is a counted click in a deduplication value.
type entry struct {
	ad, click []byte
	ts        int64
	bot       bool
	ip        netip.Addr
}

// appendEntry appends one counted click to a deduplication value.
func appendEntry(dst []byte, ad, click string, ts int64, bot bool, ip netip.Addr) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ad)))
	dst = append(dst, ad...)
	dst = binary.AppendUvarint(dst, uint64(len(click)))
	dst = append(dst, click...)
	dst = binary.AppendVarint(dst, ts)
	if bot {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	return appendIP(dst, ip)
}

// forEachEntry calls fn for the entries of a deduplication value until fn
// returns false.
func forEachEntry(v []byte, fn func(e *entry) bool) error {
	var e entry
	for len(v) > 0 {
		var err error
		if e.ad, v, err = readBytes(v); err != nil {
			return err
		}
		if e.click, v, err = readBytes(v); err != nil {
			return err
		}
		t, n := binary.Varint(v)
		if n <= 0 || len(v) < n+1 {
			return errCorrupt
		}
		e.ts, e.bot = t, v[n] == 1
		if e.ip, v, err = readIP(v[n+1:]); err != nil {
			return err
		}
		if !fn(&e) {
			return nil
		}
	}
	return nil
}

// matchEntry reports whether v holds (ad, click) with an event time within h
// of ts.
func matchEntry(v []byte, ad, click string, ts, h int64) (bool, error) {
	found := false
	err := forEachEntry(v, func(e *entry) bool {
		d := ts - e.ts
		found = d <= h && d >= -h && string(e.ad) == ad && string(e.click) == click
		return !found
	})
	return found, err
}

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func be64bytes(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
