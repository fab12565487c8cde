// Package breaker is a circuit breaker for calls to one upstream (in the
// gateway, one target_cluster). It stops sending traffic to an upstream that
// is failing, fails those calls fast instead, and probes now and then to find
// out whether the upstream has recovered.
//
// A Breaker is in one of three states:
//
//   - Closed: calls go through. The outcomes of completed calls are counted in
//     a rolling window of Config.Window split into Config.Buckets buckets;
//     whole buckets fall out of the window as time passes. The breaker opens
//     when the window holds at least Config.MinCalls completed calls and
//     strictly more than Config.FailureRatio of them failed (with the
//     defaults: 11 failures of 20 opens, 10 of 20 does not, and 19 failures
//     of 19 does not).
//   - Open: Allow fails fast with ErrOpen. Once a wait drawn uniformly from
//     [Config.OpenFor, 2·Config.OpenFor) has passed, the next Allow moves the
//     breaker to HalfOpen. The jitter keeps many gateways from probing a
//     recovering upstream in lockstep.
//   - HalfOpen: at most Config.Probes calls are let through at a time; the
//     rest get ErrOpen. One probe failure reopens the breaker (with a fresh
//     jittered wait); Config.Probes consecutive probe successes close it with
//     an empty window.
//
// Each call that Allow lets through gets a done function, and reports its
// outcome through it exactly once: Success, Failure, or Ignore for outcomes
// that say nothing about the upstream (a client that went away). Invariants:
//
//   - Every state change starts a new generation. An outcome is counted only
//     if the breaker is still in the generation in which its call was
//     allowed; results of calls that straddle a state change are dropped.
//   - Calling a done function again has no effect.
//   - Ignore is never counted as a success or a failure; in HalfOpen it only
//     frees the probe's slot.
//   - There are no goroutines and no timers: time is read (Config.Now) on
//     Allow, on done and on Counts, so an idle open breaker stays Open, as
//     State reports it, until the next Allow.
//
// A Breaker is safe for concurrent use by many goroutines; one mutex guards
// its state. The Config callbacks are called after that mutex is released,
// on the goroutine whose Allow or done caused the event, so they may call the
// Breaker's methods. Transitions caused by different goroutines can
// therefore reach OnStateChange in a different order than they happened; a
// state gauge should read State rather than rely on the order of calls.
package breaker
