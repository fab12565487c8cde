// Package loadgen drives pedal's click ingestion with an open-loop, constant-rate
// load: request i is due at t0 + i/requestRate whatever happened to the requests
// before it, and its latency is measured from that intended time, so a stalled
// server shows up as growing latency instead of a politely slower client
// (coordinated omission). At most Config.Concurrency requests are in flight; when
// all are busy the schedule keeps running, requests start late and the summary
// counts them.
//
// Two modes: ModeClicks POSTs batches of generated clicks to /v1/clicks (JSON array
// or NDJSON, built by hand into pooled buffers), ModeRedirect GETs /v1/r/{token}
// with tokens minted locally by clicktoken, never following the redirect.
//
// The clicks are synthetic but shaped like traffic: Zipf-distributed ads, weighted
// countries, real browser user agents, and configurable shares of duplicates, bots,
// bursts from one hot IP and late (old event time) clicks. Everything drawn is
// reproducible from Config.Seed; click ids are unique per run (Config.RunID).
//
// The optional ledger records every acknowledged click (one line per click:
// click_id, ad_id, country, ts_ms, kind), and SummarizeLedger turns a ledger into
// the counts an aggregation stage must reproduce.
//
// Run owns every goroutine it starts and returns after they have stopped. Nothing in
// this package holds package-level mutable state.
package loadgen
