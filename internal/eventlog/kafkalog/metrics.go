package kafkalog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	records  prometheus.Counter
	failures prometheus.Counter
	fetched  prometheus.Counter
	latency  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_kafkalog_appended_records_total",
			Help: "Records appended to Kafka and acknowledged by every in-sync replica.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_kafkalog_append_failures_total",
			Help: "Appends to Kafka that returned an error after producing.",
		}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_kafkalog_fetched_records_total",
			Help: "Records returned by fetches from Kafka.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pedal_kafkalog_append_duration_seconds",
			Help:    "Time for an append to be acknowledged by Kafka (acks=all), lingering included.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1, 5},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.records, m.failures, m.fetched, m.latency)
	}
	return m
}

func (m *metrics) observeAppend(records int, d time.Duration) {
	m.records.Add(float64(records))
	m.latency.Observe(d.Seconds())
}
