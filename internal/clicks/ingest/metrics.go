package ingest

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests     *prometheus.CounterVec
	accepted     prometheus.Counter
	rejectedVec  *prometheus.CounterVec
	saturated    prometheus.Counter
	appendErrors prometheus.Counter
	redirects    *prometheus.CounterVec
	recorded     prometheus.Counter // redirects{outcome="recorded"}, resolved once
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_ingest_requests_total",
			Help: "Click ingestion requests by outcome (accepted, all_rejected, malformed, empty, too_large, unsupported_media_type).",
		}, []string{"outcome"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_ingest_clicks_accepted_total",
			Help: "Clicks made durable by POST /v1/clicks.",
		}),
		rejectedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_ingest_clicks_rejected_total",
			Help: "Click records refused by validation, by rejection code.",
		}, []string{"code"}),
		saturated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_ingest_saturated_total",
			Help: "Requests answered 503 because in-flight request bodies were at their limit.",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_ingest_append_errors_total",
			Help: "Appends to the click log that failed; their requests were not acknowledged.",
		}),
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_redirect_clicks_total",
			Help: "Redirect clicks by outcome (recorded, unrecorded: redirected although the log refused the click, invalid_token, expired_token).",
		}, []string{"outcome"}),
	}
	m.recorded = m.redirects.WithLabelValues("recorded")
	if reg != nil {
		reg.MustRegister(m.requests, m.accepted, m.rejectedVec, m.saturated, m.appendErrors, m.redirects)
	}
	return m
}

func (m *metrics) rejected(code string) prometheus.Counter {
	return m.rejectedVec.WithLabelValues(code)
}
