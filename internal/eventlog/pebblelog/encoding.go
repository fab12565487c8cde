package pebblelog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pedal-project/pedal/internal/eventlog"
)

// Key layout. Every key starts with a one-byte kind; integers are big-endian so that
// keys sort by (topic, partition, offset).
//
//	'm' name                             → topic metadata: id uint32, partitions uint32
//	'd' topicID u32, partition u32, base u64  → a batch of records (see appendBatch)
//	's' topicID u32, partition u32       → log start offset u64 (after retention)
//	'c' topicID u32, partition u32, group → committed offset u64 of a consumer group
const (
	kindMeta   = 'm'
	kindData   = 'd'
	kindStart  = 's'
	kindCommit = 'c'
)

func metaKey(name string) []byte { return append([]byte{kindMeta}, name...) }

func partKey(kind byte, topic uint32, part int32) []byte {
	k := make([]byte, 9, 17)
	k[0] = kind
	binary.BigEndian.PutUint32(k[1:], topic)
	binary.BigEndian.PutUint32(k[5:], uint32(part))
	return k
}

func dataKey(topic uint32, part int32, base int64) []byte {
	return binary.BigEndian.AppendUint64(partKey(kindData, topic, part), uint64(base))
}

func commitKey(topic uint32, part int32, group string) []byte {
	return append(partKey(kindCommit, topic, part), group...)
}

const batchVersion = 1

// A batch value holds the records one Append put in one partition:
//
//	version u8, count uvarint, appendTime varint (Unix ms), baseTime varint (Unix ms),
//	then per record: timeDelta varint, keyLen uvarint, key, valueLen uvarint, value.
//
// Storing many records under one key keeps the per-record cost of the store (key,
// memtable node, index entry) off the hot path; offsets inside are implicit.
func appendBatch(dst []byte, appendTime int64, recs []*eventlog.Record) []byte {
	base := recs[0].Timestamp.UnixMilli()
	dst = append(dst, batchVersion)
	dst = binary.AppendUvarint(dst, uint64(len(recs)))
	dst = binary.AppendVarint(dst, appendTime)
	dst = binary.AppendVarint(dst, base)
	for _, r := range recs {
		dst = binary.AppendVarint(dst, r.Timestamp.UnixMilli()-base)
		dst = binary.AppendUvarint(dst, uint64(len(r.Key)))
		dst = append(dst, r.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(r.Value)))
		dst = append(dst, r.Value...)
	}
	return dst
}

type batchHeader struct {
	count      int64
	appendTime int64
	baseTime   int64
	body       []byte
}

var errCorrupt = errors.New("pebblelog: corrupt batch")

func readHeader(b []byte) (batchHeader, error) {
	if len(b) == 0 || b[0] != batchVersion {
		return batchHeader{}, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	b = b[1:]
	count, n := binary.Uvarint(b)
	if n <= 0 {
		return batchHeader{}, errCorrupt
	}
	b = b[n:]
	at, n := binary.Varint(b)
	if n <= 0 {
		return batchHeader{}, errCorrupt
	}
	b = b[n:]
	bt, n := binary.Varint(b)
	if n <= 0 {
		return batchHeader{}, errCorrupt
	}
	return batchHeader{count: int64(count), appendTime: at, baseTime: bt, body: b[n:]}, nil
}

// decodeBatch appends to dst the records of the batch at base whose offsets are in
// [from, to), at most max of them. The records' Key and Value alias b.
func decodeBatch(dst []eventlog.Record, part int32, base int64, b []byte, from, to int64, max int) ([]eventlog.Record, error) {
	h, err := readHeader(b)
	if err != nil {
		return dst, err
	}
	body := h.body
	for i := int64(0); i < h.count; i++ {
		d, n := binary.Varint(body)
		if n <= 0 {
			return dst, errCorrupt
		}
		body = body[n:]
		kl, n := binary.Uvarint(body)
		if n <= 0 || uint64(len(body)-n) < kl {
			return dst, errCorrupt
		}
		key := body[n : n+int(kl) : n+int(kl)]
		body = body[n+int(kl):]
		vl, n := binary.Uvarint(body)
		if n <= 0 || uint64(len(body)-n) < vl {
			return dst, errCorrupt
		}
		val := body[n : n+int(vl) : n+int(vl)]
		body = body[n+int(vl):]
		off := base + i
		if off < from {
			continue
		}
		if off >= to || len(dst) >= max {
			break
		}
		if len(key) == 0 {
			key = nil
		}
		dst = append(dst, eventlog.Record{
			Partition: part,
			Offset:    off,
			Timestamp: time.UnixMilli(h.baseTime + d),
			Key:       key,
			Value:     val,
		})
	}
	return dst, nil
}
