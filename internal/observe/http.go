package observe

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
)

// HTTPMetrics instruments handlers by route. Label children are resolved when a route
// is registered, not per request.
type HTTPMetrics struct {
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

// NewHTTPMetrics registers pedal_http_request_duration_seconds and
// pedal_http_requests_in_flight on reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pedal_http_request_duration_seconds",
			Help:    "Time from request receipt to the end of the response, by route pattern, method and status code.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "code"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pedal_http_requests_in_flight",
			Help: "Requests being served.",
		}),
	}
	reg.MustRegister(m.duration, m.inflight)
	return m
}

// Wrap instruments h, served under the net/http pattern route, with metrics and a
// server span named after the route (the incoming traceparent is honoured).
func (m *HTTPMetrics) Wrap(route string, tp trace.TracerProvider, h http.Handler) http.Handler {
	obs := m.duration.MustCurryWith(prometheus.Labels{"route": route})
	byCode := map[int]prometheus.Observer{}
	for _, c := range []int{200, 201, 202, 204, 302, 400, 404, 405, 409, 413, 415, 422, 429, 500, 503} {
		byCode[c] = obs.WithLabelValues(strconv.Itoa(c))
	}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inflight.Inc()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		defer func() {
			m.inflight.Dec()
			o, ok := byCode[sw.code]
			if !ok {
				o = obs.WithLabelValues(strconv.Itoa(sw.code))
			}
			o.Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sw, r)
	})
	return otelhttp.NewHandler(inner, route,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(noopMeterProvider),
	)
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
