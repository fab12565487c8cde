package outbox

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what a Relay does. A nil *Metrics records nothing.
type Metrics struct {
	backlog       prometheus.Gauge
	publishedRows prometheus.Counter
	failedRows    prometheus.Counter
	publishErrors prometheus.Counter
}

// NewMetrics registers the relay's metrics with reg; table names the outbox in
// the metric's const label "table" so two relays can share a registry.
func NewMetrics(reg prometheus.Registerer, table string) (*Metrics, error) {
	l := prometheus.Labels{"table": table}
	m := &Metrics{
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pedal_outbox_backlog",
			Help: "PENDING outbox rows after the relay's last pass.", ConstLabels: l}),
		publishedRows: prometheus.NewCounter(prometheus.CounterOpts{Name: "pedal_outbox_published_total",
			Help: "Outbox rows published and marked PROCESSED.", ConstLabels: l}),
		failedRows: prometheus.NewCounter(prometheus.CounterOpts{Name: "pedal_outbox_failed_total",
			Help: "Outbox rows marked FAILED after their last attempt.", ConstLabels: l}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "pedal_outbox_publish_errors_total",
			Help: "Failed publish calls (each retried later).", ConstLabels: l}),
	}
	for _, c := range []prometheus.Collector{m.backlog, m.publishedRows, m.failedRows, m.publishErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) published(n int) {
	if m != nil {
		m.publishedRows.Add(float64(n))
	}
}

func (m *Metrics) failed(n int) {
	if m != nil {
		m.failedRows.Add(float64(n))
	}
}

func (m *Metrics) publishError() {
	if m != nil {
		m.publishErrors.Inc()
	}
}

// Backlog is the gauge of PENDING rows.
func (m *Metrics) Backlog() prometheus.Gauge { return m.backlog }

// Failed counts rows marked FAILED.
func (m *Metrics) Failed() prometheus.Counter { return m.failedRows }

// PublishErrors counts failed publish calls.
func (m *Metrics) PublishErrors() prometheus.Counter { return m.publishErrors }
