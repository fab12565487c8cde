// Package kafkalog is the Kafka implementation of eventlog, for running pedal's
// roles as separate processes: it keeps the eventlog contract on a Kafka cluster
// through franz-go (kgo for produce and fetch, kadm for topics and offsets).
//
// Concepts map one to one: an eventlog topic is a Kafka topic, a partition a
// partition, an offset a Kafka offset, a partition's start and end its log start
// offset and high watermark, and a consumer group's position an offset committed
// in Kafka's group coordinator (as a "simple" group, without membership: pedal
// assigns partitions itself).
//
// Invariants:
//   - Append produces with acks=all and idempotence (franz-go's defaults), each
//     record to the partition it names (a manual partitioner), and returns nil
//     only once Kafka acknowledged every record; then each record's Offset is set.
//     Records of one Append to one partition keep their order; with idempotence a
//     retried batch is neither duplicated nor reordered.
//   - Fetch reads with read_uncommitted isolation below the high watermark, which
//     only advances once the in-sync replicas have a record, so a reader never sees
//     a record a broker failure could take back. It sends a Fetch request straight
//     to the partition's leader for exactly the offset asked for; the broker
//     answers OFFSET_OUT_OF_RANGE below the log start or above the high watermark,
//     and waits (bounded by FetchMaxWait, repeated until ctx is done) at the high
//     watermark. No consumer state is kept between calls.
//   - Errors carry eventlog's sentinels (ErrUnknownTopic, ErrBadPartition,
//     ErrOffsetOutOfRange, ErrTopicExists, ErrClosed) for errors.Is, wrapped
//     together with the Kafka error (a kerr.Error) where there is one.
//
// A *Log is safe for concurrent use. Close waits for operations in progress;
// waiting Fetches return ErrClosed at once.
package kafkalog
