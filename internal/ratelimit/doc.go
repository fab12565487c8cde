// Package ratelimit limits request rates per client and route for pedal's API
// gateway.
//
// # Concept
//
// A [Limit] admits Rate requests per Period with bursts of up to Burst
// requests. Limits are enforced with the generic cell rate algorithm (GCRA),
// exactly as github.com/go-redis/redis_rate (v10) does, so that the in-process
// [Local] limiter and a Redis-backed [Limiter] built on redis_rate give the
// same answers for the same sequence of requests. GCRA keeps a single number
// per key, the theoretical arrival time (TAT): the time at which the key's
// bucket would be full again if no further request arrived. With
// emission interval T = Period/Rate, a request arriving at now is admitted
// iff
//
//	max(TAT, now) + T - Burst·T <= now
//
// and on admission TAT becomes max(TAT, now) + T. A refused request leaves the
// TAT unchanged. Keys are opaque strings; callers build them from the route
// and the client, see [Key].
//
// # Invariants
//
//   - With the clock held still, a key admits exactly Burst requests.
//   - In steady state a key admits exactly Rate requests per Period.
//   - [Result.RetryAfter] of a refusal is exact: a request made RetryAfter
//     later is admitted (if no other request intervened), one made 1ns
//     earlier is not. On admission RetryAfter is -1, as in redis_rate.
//   - A TAT at or before now carries no information (the bucket is full), so
//     [Local] may drop it; dropping such an entry never changes a decision.
//   - [Local] holds at most [Config.MaxEntries] keys. Beyond that it evicts
//     entries, nearest-to-full first (sampled), which can only make it more
//     permissive for the evicted key, never refuse a request it would
//     otherwise have admitted.
//
// Periods are kept to the nanosecond: when Period is not a multiple of Rate,
// the emission interval is rounded up to the next nanosecond, so a limiter
// never admits faster than the stated rate.
//
// # Concurrency
//
// [Local] is safe for concurrent use; each Allow is atomic per key (a key's
// read-modify-write of its TAT happens under its shard's lock). [SetHeaders]
// and [Key] are pure functions. [Limit] and [Result] are plain values.
package ratelimit
