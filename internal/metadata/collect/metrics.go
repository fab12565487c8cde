package collect

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	fetches     *prometheus.CounterVec
	duration    prometheus.Histogram
	cache       *prometheus.CounterVec
	cacheErrors *prometheus.CounterVec
	rejected    prometheus.Counter
	transitions *prometheus.CounterVec
	openHosts   prometheus.Gauge
	probes      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	return &metrics{
		fetches: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_metadata_collections_total",
			Help: "Page collections (fetch, retries, extraction) by outcome: ok or the error code.",
		}, []string{"outcome"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pedal_metadata_collection_duration_seconds",
			Help:    "Time to collect one page, retries and secondary fetches included.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		cache: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_metadata_cache_total",
			Help: "Collections by source: hit (result cache), shared (a concurrent identical fetch), miss (fetched).",
		}, []string{"result"}),
		cacheErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_metadata_cache_errors_total",
			Help: "Result cache operations (get, put) that failed; a failed get is a miss, a failed put loses the entry.",
		}, []string{"op"}),
		rejected: f.NewCounter(prometheus.CounterOpts{
			Name: "pedal_metadata_breaker_rejections_total",
			Help: "Requests refused at once because their host's circuit breaker was open.",
		}),
		transitions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_metadata_breaker_transitions_total",
			Help: "Per-host circuit breaker state changes, by the state entered.",
		}, []string{"to"}),
		openHosts: f.NewGauge(prometheus.GaugeOpts{
			Name: "pedal_metadata_breaker_open_hosts",
			Help: "Hosts whose circuit breaker is open or half-open.",
		}),
		probes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_metadata_secondary_fetches_total",
			Help: "Secondary fetches (oembed, image) by kind and outcome (ok, failed).",
		}, []string{"kind", "outcome"}),
	}
}

func (m *metrics) observe(err error, d time.Duration) {
	m.duration.Observe(d.Seconds())
	var e *Error
	switch {
	case err == nil:
		m.fetches.WithLabelValues("ok").Inc()
	case errors.As(err, &e):
		m.fetches.WithLabelValues(e.Code).Inc()
	default:
		m.fetches.WithLabelValues("cancelled").Inc()
	}
}
