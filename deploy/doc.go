// Package deploy holds what an operator loads next to pedal rather than Go
// code: Prometheus recording and alerting rules with their promtool unit
// tests and an example scrape configuration (prometheus/), and a Grafana
// dashboard (grafana/). README.md says how to load them.
//
// Its tests keep those files honest: every metric the rules and the dashboard
// name must be exported by a running pedal (the embedded default, and pedal on
// Kafka and ClickHouse), every dashboard panel must be well formed, and
// promtool must accept the rules and pass their unit tests.
package deploy
