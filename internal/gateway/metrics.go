package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	requests           *prometheus.HistogramVec
	inflight           *prometheus.GaugeVec
	rejections         *prometheus.CounterVec
	breakerState       *prometheus.GaugeVec
	breakerTransitions *prometheus.CounterVec
	shortCircuits      *prometheus.CounterVec
	fallbacks          prometheus.Counter
	retries            *prometheus.CounterVec
	endpointUp         *prometheus.GaugeVec
	reloads            *prometheus.CounterVec
	version            prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_duration_seconds",
			Help:    "Requests through the gateway, by route id (empty when no route matched) and status code.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "code"}),
		inflight: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pedal_gateway_requests_in_flight",
			Help: "Requests being served, by route id.",
		}, []string{"route"}),
		rejections: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_gateway_rejections_total",
			Help: "Requests the gateway refused, by route id and reason (unauthorized, forbidden, rate_limited, concurrency, breaker_open, no_endpoint, timeout, upstream).",
		}, []string{"route", "reason"}),
		breakerState: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pedal_gateway_breaker_state",
			Help: "Circuit breaker state per cluster: 0 closed, 1 open, 2 half-open.",
		}, []string{"cluster"}),
		breakerTransitions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_gateway_breaker_transitions_total",
			Help: "Circuit breaker state changes per cluster, by the state entered.",
		}, []string{"cluster", "to"}),
		shortCircuits: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_gateway_breaker_short_circuits_total",
			Help: "Calls refused at once because the cluster's breaker was open.",
		}, []string{"cluster"}),
		fallbacks: f.NewCounter(prometheus.CounterOpts{
			Name: "pedal_gateway_fallback_responses_total",
			Help: "Stale answers served from the fallback cache while a breaker was open.",
		}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_gateway_retries_total",
			Help: "Retries to upstream endpoints, by cluster.",
		}, []string{"cluster"}),
		endpointUp: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pedal_gateway_endpoint_up",
			Help: "1 when an endpoint passes its cluster's health checks, 0 when it is taken out of balancing.",
		}, []string{"cluster", "endpoint"}),
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_gateway_config_reloads_total",
			Help: "Route configurations loaded, or refused (the last good one stays), by result.",
		}, []string{"result"}),
		version: f.NewGauge(prometheus.GaugeOpts{
			Name: "pedal_gateway_config_version",
			Help: "Version of the route configuration being served.",
		}),
	}
}
