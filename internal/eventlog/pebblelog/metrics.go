package pebblelog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	records prometheus.Counter
	commits prometheus.Counter
	bytes   prometheus.Counter
	latency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, l *Log) *metrics {
	m := &metrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_eventlog_appended_records_total",
			Help: "Records made durable in the embedded event log.",
		}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_eventlog_commits_total",
			Help: "Group commits to the embedded event log: one Pebble batch and one WAL sync shared by the appends queued meanwhile.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_eventlog_appended_bytes_total",
			Help: "Encoded bytes of the batches appended to the embedded event log.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pedal_eventlog_append_duration_seconds",
			Help:    "Time for an append to become durable: queueing for its group, the group's commit and the shared WAL sync.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .02, .05, .1, .25, 1},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.records, m.commits, m.bytes, m.latency,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pedal_eventlog_full",
				Help: "1 while appends are refused because free disk space is below the minimum.",
			}, func() float64 {
				if l.full.Load() {
					return 1
				}
				return 0
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pedal_eventlog_disk_bytes",
				Help: "Disk space used by the embedded event log's store.",
			}, func() float64 {
				if l.enter() != nil {
					return 0
				}
				defer l.exit()
				return float64(l.db.Metrics().DiskSpaceUsage())
			}),
		)
	}
	return m
}

func (m *metrics) observeAppend(records int, d time.Duration) {
	m.records.Add(float64(records))
	m.latency.Observe(d.Seconds())
}

func (m *metrics) observeCommit(bytes int) {
	m.commits.Inc()
	m.bytes.Add(float64(bytes))
}
