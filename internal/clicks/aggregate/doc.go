// Package aggregate is the stream aggregator of clicks: one owner per partition
// of the "clicks" log reads the partition in log order, deduplicates, flags
// invalid traffic, counts clicks in event-time one-minute windows keyed by
// (ad_id, country), and publishes absolute window totals to the analytics store.
//
// # Rules
//
// For each click, in log order within its partition (the rules of the reference
// model in package reference, which the tests hold this package to):
//
//  1. too_late: with W the partition's watermark (largest event time among the
//     earlier clicks − AllowedLateness), a click with ts < W − LateHorizon is
//     counted as too_late and otherwise ignored.
//  2. duplicate: a click whose (ad_id, click_id) matches an earlier counted click
//     whose event time is within DedupHorizon of its own is a duplicate.
//  3. bot_user_agent, then ip_rate: a user agent containing a bot substring, or
//     the clicks of one ip on one ad in one event-time minute beyond IPRateLimit
//     (counting neither duplicates nor bots), are invalid.
//  4. Everything else is valid. Valid and invalid clicks count in the window
//     (ad_id, country, minute of ts); duplicates are reported in that window's
//     duplicates column, too_late clicks in the window of the partition's newest
//     minute (their own window is closed).
//
// # Exactly-once results
//
// The partition's state (open windows, deduplication entries, per-ip counters)
// and its next input offset are committed to a local Pebble store in one
// synced write batch; only then are the changed windows' absolute totals
// upserted to the analytics store. Processing is deterministic in log order, so
// after a crash the owner reloads the last committed state, reprocesses the log
// from the committed offset, and writes the same totals again: a click is never
// lost and never counted twice. The watermark and every cutoff derive from event
// times only, never from the wall clock, so checkpoint timing cannot change a
// result.
//
// # Memory
//
// Deduplication keeps, per partition, a compact fingerprint set (fpset, ≤ 16
// bytes a key) of the clicks of the last DedupHorizon + AllowedLateness of event
// time; every counted click's full (ad_id, click_id, ts) lives in the state
// store, which confirms each fingerprint match (exact: a false positive would
// drop a paid click) and answers for late clicks, whose horizon reaches below
// the in-memory range. Per-ip counters live in memory for the last minutes and
// in the store before that. Windows stay in memory until the watermark passes
// them by LateHorizon, when they can no longer change.
//
// An Aggregator is safe for concurrent use by the query side (Status,
// Watermark) while Run processes; each partition is owned by one goroutine.
package aggregate
