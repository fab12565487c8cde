package embedstore

import (
	"encoding/binary"
	"errors"
)

// On disk, one Pebble key per row:
//
//	'r' | minute (8 bytes, big endian, sign bit flipped) | uvarint len(ad) | ad | country
//
// and its value is the five totals as uvarints (clicks, bot, ip rate,
// duplicates, too late). Keys sort by minute first, so a retention cut is one
// range deletion and recovery reads minutes in order.
const kindRow = 'r'

func minuteKey(dst []byte, m int64) []byte {
	dst = append(dst, kindRow)
	return binary.BigEndian.AppendUint64(dst, uint64(m)^(1<<63))
}

func rowKey(dst []byte, m int64, ad, country string) []byte {
	dst = minuteKey(dst, m)
	dst = binary.AppendUvarint(dst, uint64(len(ad)))
	dst = append(dst, ad...)
	return append(dst, country...)
}

var errCorrupt = errors.New("corrupt row")

// parseRowKey returns the parts of a row key; ad and country alias key.
func parseRowKey(key []byte) (m int64, ad, country []byte, err error) {
	if len(key) < 10 || key[0] != kindRow {
		return 0, nil, nil, errCorrupt
	}
	m = int64(binary.BigEndian.Uint64(key[1:9]) ^ (1 << 63))
	n, w := binary.Uvarint(key[9:])
	if w <= 0 || uint64(len(key)-9-w) < n {
		return 0, nil, nil, errCorrupt
	}
	rest := key[9+w:]
	return m, rest[:n], rest[n:], nil
}

func appendTotals(dst []byte, v totals) []byte {
	for _, x := range v {
		dst = binary.AppendUvarint(dst, uint64(x))
	}
	return dst
}

func parseTotals(b []byte) (totals, error) {
	var v totals
	for i := range v {
		x, w := binary.Uvarint(b)
		if w <= 0 || x > 1<<63-1 {
			return v, errCorrupt
		}
		v[i] = int64(x)
		b = b[w:]
	}
	if len(b) != 0 {
		return v, errCorrupt
	}
	return v, nil
}
