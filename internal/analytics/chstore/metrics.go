package chstore

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics is one collector so that Close can unregister it whole.
type metrics struct {
	s   *Store
	reg prometheus.Registerer

	inserts, insertErrors, insertedRows, spoolErrors prometheus.Counter
}

var (
	descSpoolBytes = prometheus.NewDesc("pedal_analytics_ch_spool_bytes",
		"Bytes of window totals waiting in the local spool for ClickHouse.", nil, nil)
	descSpoolRows = prometheus.NewDesc("pedal_analytics_ch_spool_rows",
		"Rows of window totals waiting in the local spool for ClickHouse (not yet visible to reads).", nil, nil)
	descBreaker = prometheus.NewDesc("pedal_analytics_ch_breaker_state",
		"State of the circuit breaker in front of ClickHouse inserts: 0 closed, 1 open, 2 half-open.", nil, nil)
)

func newMetrics(s *Store) *metrics {
	return &metrics{
		s: s,
		inserts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_analytics_ch_inserts_total",
			Help: "INSERT statements sent to ClickHouse (at most one per flush interval).",
		}),
		insertErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_analytics_ch_insert_errors_total",
			Help: "INSERT statements that failed; their new rows went to the spool.",
		}),
		insertedRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_analytics_ch_inserted_rows_total",
			Help: "Rows inserted into ClickHouse, spooled ones included.",
		}),
		spoolErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_analytics_ch_spool_errors_total",
			Help: "Failed writes to the spool (full or I/O error): the Upserts concerned returned an error.",
		}),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(m, ch)
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descSpoolBytes, prometheus.GaugeValue, float64(m.s.spool.bytes.Load()))
	ch <- prometheus.MustNewConstMetric(descSpoolRows, prometheus.GaugeValue, float64(m.s.spool.rows.Load()))
	ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, float64(m.s.br.State()))
	for _, c := range []prometheus.Counter{m.inserts, m.insertErrors, m.insertedRows, m.spoolErrors} {
		c.Collect(ch)
	}
}
