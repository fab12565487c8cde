package observe

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// NewTracerProvider returns a tracer provider whose exporter is chosen by the standard
// OTEL_* environment variables (OTEL_TRACES_EXPORTER=otlp|console|none,
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER, ...). Export is off unless
// OTEL_TRACES_EXPORTER or an OTLP endpoint variable is set: spans are still created,
// so logs carry trace ids and traceparent headers propagate, but nothing leaves the
// process. It also installs the W3C trace-context and baggage propagator.
//
// The caller must call shutdown to flush spans before exit.
func NewTracerProvider(ctx context.Context, serviceName string, getenv func(string) string) (tp *sdktrace.TracerProvider, shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(serviceName)))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, nil, fmt.Errorf("tracing resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if exportConfigured(getenv) {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("trace exporter (OTEL_TRACES_EXPORTER): %w", err)
		}
		if !autoexport.IsNoneSpanExporter(exp) {
			opts = append(opts, sdktrace.WithBatcher(exp))
		}
	}
	tp = sdktrace.NewTracerProvider(opts...)
	return tp, tp.Shutdown, nil
}

func exportConfigured(getenv func(string) string) bool {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if getenv(k) != "" {
			return true
		}
	}
	return false
}
