package aggregate

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// State store layout, all keys prefixed by kind and partition, minutes as
// big-endian Unix minutes so that a range of minutes is a range of keys:
//
//	'o' part                          → next offset u64 | has max u8 | max event time i64 (ms)
//	'p' part                          → next offset whose state the analytics store holds
//	'w' part minute ad_id 0 country   → clicks, bot, ip_rate, duplicates, too_late (uvarints)
//	'i' part minute iplen ip ad_id    → clicks counted toward the ip rate limit (uvarint)
//	'd' part minute fingerprint       → entries (uvarint-prefixed ad_id and click_id, varint ts ms)
const (
	kindMeta      = 'o'
	kindPublished = 'p'
	kindWindow    = 'w'
	kindIP        = 'i'
	kindDedup     = 'd'
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

func ipStoreKey(dst []byte, part int32, k ipKey) []byte {
	dst = append(dst[:0], kindIP)
	dst = binary.BigEndian.AppendUint32(dst, uint32(part))
	dst = binary.BigEndian.AppendUint32(dst, k.minute)
	ip := k.ip.AsSlice()
	dst = append(dst, byte(len(ip)))
	dst = append(dst, ip...)
	return append(dst, k.ad...)
}

func parseIPKey(key []byte) (ipKey, bool) {
	if len(key) < 10 {
		return ipKey{}, false
	}
	m := binary.BigEndian.Uint32(key[5:9])
	n := int(key[9])
	if len(key) < 10+n {
		return ipKey{}, false
	}
	ip, ok := netip.AddrFromSlice(key[10 : 10+n])
	if !ok {
		return ipKey{}, false
	}
	return ipKey{ad: string(key[10+n:]), ip: ip, minute: m}, true
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

// appendEntry appends one counted click to a deduplication value.
func appendEntry(dst []byte, ad, click string, ts int64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ad)))
	dst = append(dst, ad...)
	dst = binary.AppendUvarint(dst, uint64(len(click)))
	dst = append(dst, click...)
	return binary.AppendVarint(dst, ts)
}

// matchEntry reports whether v holds (ad, click) with an event time within h
// of ts.
func matchEntry(v []byte, ad, click string, ts, h int64) (bool, error) {
	for len(v) > 0 {
		var f [2][]byte
		for i := range f {
			l, n := binary.Uvarint(v)
			if n <= 0 || uint64(len(v)-n) < l {
				return false, errCorrupt
			}
			f[i], v = v[n:n+int(l)], v[n+int(l):]
		}
		t, n := binary.Varint(v)
		if n <= 0 {
			return false, errCorrupt
		}
		v = v[n:]
		if d := ts - t; d <= h && d >= -h && string(f[0]) == ad && string(f[1]) == click {
			return true, nil
		}
	}
	return false, nil
}

func uvarint(b []byte) (uint64, int)            { return binary.Uvarint(b) }
func appendUvarint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }
func be32(b []byte) uint32                      { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64                      { return binary.BigEndian.Uint64(b) }
