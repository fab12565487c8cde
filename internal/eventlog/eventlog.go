// Package eventlog defines pedal's partitioned, durable event log in Kafka's terms:
// named topics split into a fixed number of partitions, each an append-only sequence
// of records numbered by contiguous offsets from the partition's log start offset,
// and consumer groups whose positions (committed offsets) are stored beside the data.
//
// The contract every implementation keeps (eventlogtest checks it):
//   - Append returns nil only once every record it was given is durable, and then
//     each record's Offset holds its position; records of one call that land in the
//     same partition keep their order and get consecutive offsets.
//   - Readers never see a record that is not yet durable, so an offset once read is
//     never reused for another record, even after a crash.
//   - Offsets in a partition are contiguous and never reused; a reopened log
//     continues after the last durable record.
//
// Implementations: pebblelog (embedded, the default) and, for scale-out, Kafka.
package eventlog

import (
	"errors"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Record is one entry of a partition.
type Record struct {
	Partition int32     // set by the producer; see PartitionFor
	Offset    int64     // set by Append and by reads
	Timestamp time.Time // event time, millisecond precision; zero means the time of append
	Key       []byte
	Value     []byte
}

// Errors reported by implementations; match them with errors.Is.
var (
	ErrUnknownTopic     = errors.New("eventlog: unknown topic")
	ErrBadPartition     = errors.New("eventlog: partition out of range")
	ErrOffsetOutOfRange = errors.New("eventlog: offset out of range")
	ErrFull             = errors.New("eventlog: log is full")
	ErrClosed           = errors.New("eventlog: log is closed")
	ErrTopicExists      = errors.New("eventlog: topic exists with another partition count")
)

// PartitionFor maps a key to one of n partitions with a hash that is stable across
// processes, versions and backends (64-bit xxHash), so a key's records always share
// a partition.
func PartitionFor(key []byte, n int32) int32 {
	return int32(xxhash.Sum64(key) % uint64(n))
}

// PartitionForString is PartitionFor for a string key, without allocating.
func PartitionForString(key string, n int32) int32 {
	return int32(xxhash.Sum64String(key) % uint64(n))
}
