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
// bursts from one hot IP, late and too-late (old event time) clicks. Everything
// drawn is reproducible from Config.Seed, except which late clicks wait for an
// acknowledgement (below); click ids are unique per run (Config.RunID).
//
// The optional ledger records every acknowledged click, in the order of the
// acknowledgements (see ReadLedger for the format). Expect feeds a ledger to the
// reference model of the aggregation rules (package clicks/reference) and Verify
// compares the result with what a pedal server's query API serves.
//
// # Why the ledger order is good enough
//
// The rules depend on log order: which copy of a click is the duplicate, which
// clicks of an IP exceed 5 per ad and minute, and the watermark that makes a
// click too late. Requests in flight together reach the log in an order the client
// does not know, and the ledger has them in the order of their answers. The
// generated stream is built so that every order of concurrent requests gives the
// same totals per (ad, country, minute) window and per verdict:
//
//   - A duplicate repeats an earlier click exactly (click_id, ad_id, ts, ip, user
//     agent, country): whichever copy the log holds first counts, in the same
//     window, with the same verdict, and the other is the duplicate.
//   - The clicks of a burst share ip, ad_id, country, user agent and event-time
//     minute, so which of them exceed the limit changes nothing in the window's
//     totals. Burst addresses come from /8s no other click uses, one address per
//     group, so no other click is numbered with a burst's.
//   - A click is too late when its ts is older than the watermark, (largest event
//     time in its partition) − 30s, minus 1h: 60.5 minutes behind the partition's
//     newest click. Late clicks are 2 to 45 minutes old and too-late ones 80 to 90
//     minutes, clear of that band by more than the 5 minutes a click may be in
//     the future and the time a request spends in flight. A late click of either
//     sort is only drawn for an ad with an acknowledged click of the last 10
//     minutes (the partition is by ad): that click is in the log, and in the
//     ledger, before the late one is sent, so both the server's watermark and the
//     model's put a too-late click 9.5 minutes or more past the horizon. The first
//     clicks of a run are therefore never late.
//   - Unique clicks draw an IPv4 address from 26 public /8s (or an IPv6 one), so
//     six of them on one ad in one minute from one address are as good as never.
//
// The model sees one partition, the server several: that changes no verdict,
// since dedup and the IP limit are per ad and the watermarks only matter through
// the margins above. With Config.RunScopedAds the ads are named after the run, so
// a server holding other runs' clicks does not disturb the comparison. Redirect
// clicks cannot be verified: the server sets their time and country (and, unless
// it trusts X-Forwarded-For, their ip), so Verify refuses a redirect ledger.
//
// Run and Verify own every goroutine they start and return after they have
// stopped. Nothing in this package holds package-level mutable state.
package loadgen
