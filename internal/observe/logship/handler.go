package logship

import (
	"context"
	"encoding"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
)

// handler converts slog records to OTLP log records and hands them to emit.
// Attributes added with WithAttrs are converted once, when added. Groups
// become nested key-value lists, as in OpenTelemetry's slog bridge; an empty
// group is left out and a group with an empty name is inlined (slog's rules).
type handler struct {
	emit   func(*logspb.LogRecord)
	level  slog.Leveler
	root   []*commonpb.KeyValue // attributes outside any group
	groups []group              // open groups, outermost first
}

type group struct {
	name  string
	attrs []*commonpb.KeyValue
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	kvs := appendAttrs(nil, as)
	if len(kvs) == 0 {
		return h
	}
	h2 := *h
	if len(h.groups) == 0 {
		h2.root = slices.Concat(h.root, kvs)
		return &h2
	}
	h2.groups = slices.Clone(h.groups)
	last := &h2.groups[len(h2.groups)-1]
	last.attrs = slices.Concat(last.attrs, kvs)
	return &h2
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(slices.Clip(h.groups), group{name: validUTF8(name)})
	return &h2
}

// Handle converts r and hands it on; it never blocks on the disk or the
// network and never fails (what cannot be shipped is counted as dropped).
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	var attrs []*commonpb.KeyValue
	if r.NumAttrs() > 0 {
		attrs = make([]*commonpb.KeyValue, 0, r.NumAttrs())
		r.Attrs(func(a slog.Attr) bool {
			attrs = appendAttr(attrs, a)
			return true
		})
	}
	for i := len(h.groups) - 1; i >= 0; i-- {
		g := h.groups[i]
		if len(g.attrs)+len(attrs) == 0 {
			continue // an empty group is left out
		}
		attrs = []*commonpb.KeyValue{{Key: g.name, Value: kvlist(slices.Concat(g.attrs, attrs))}}
	}
	if len(h.root) > 0 {
		attrs = slices.Concat(h.root, attrs)
	}
	lr := &logspb.LogRecord{
		ObservedTimeUnixNano: uint64(time.Now().UnixNano()),
		SeverityNumber:       severity(r.Level),
		SeverityText:         r.Level.String(),
		Body:                 stringValue(r.Message),
		Attributes:           attrs,
	}
	if !r.Time.IsZero() {
		lr.TimeUnixNano = uint64(r.Time.UnixNano())
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		tid, sid := sc.TraceID(), sc.SpanID()
		lr.TraceId, lr.SpanId, lr.Flags = tid[:], sid[:], uint32(sc.TraceFlags())
	}
	h.emit(lr)
	return nil
}

// severity maps slog levels onto OTLP severity numbers, as OpenTelemetry's
// slog bridge does: DEBUG (-4) → 5 DEBUG, INFO (0) → 9 INFO, WARN (4) → 13
// WARN, ERROR (8) → 17 ERROR; levels in between land in between, and the
// result is kept within 1 (TRACE) and 24 (FATAL4).
func severity(l slog.Level) logspb.SeverityNumber {
	n := int64(l) + 9
	return logspb.SeverityNumber(min(max(n, 1), 24))
}

func appendAttrs(dst []*commonpb.KeyValue, as []slog.Attr) []*commonpb.KeyValue {
	for _, a := range as {
		dst = appendAttr(dst, a)
	}
	return dst
}

func appendAttr(dst []*commonpb.KeyValue, a slog.Attr) []*commonpb.KeyValue {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return dst
	}
	if a.Value.Kind() == slog.KindGroup {
		kvs := appendAttrs(nil, a.Value.Group())
		if len(kvs) == 0 {
			return dst
		}
		if a.Key == "" {
			return append(dst, kvs...)
		}
		return append(dst, &commonpb.KeyValue{Key: validUTF8(a.Key), Value: kvlist(kvs)})
	}
	return append(dst, &commonpb.KeyValue{Key: validUTF8(a.Key), Value: value(a.Value)})
}

// value converts a resolved, non-group slog value. Times become RFC 3339
// strings and durations nanoseconds, as in the JSON lines on stdout.
func value(v slog.Value) *commonpb.AnyValue {
	switch v.Kind() {
	case slog.KindString:
		return stringValue(v.String())
	case slog.KindInt64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v.Int64()}}
	case slog.KindUint64:
		if u := v.Uint64(); u <= math.MaxInt64 {
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(u)}}
		}
		return stringValue(strconv.FormatUint(v.Uint64(), 10))
	case slog.KindFloat64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: v.Float64()}}
	case slog.KindBool:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v.Bool()}}
	case slog.KindDuration:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(v.Duration())}}
	case slog.KindTime:
		return stringValue(v.Time().Format(time.RFC3339Nano))
	case slog.KindGroup:
		return kvlist(appendAttrs(nil, v.Group()))
	default:
		return anyValue(v.Any())
	}
}

// anyValue converts an arbitrary Go value: errors by their message, byte
// slices as bytes, text marshalers as their text, anything else as JSON (or,
// when that fails, as fmt prints it).
func anyValue(x any) *commonpb.AnyValue {
	switch x := x.(type) {
	case nil:
		return &commonpb.AnyValue{}
	case error:
		return stringValue(x.Error())
	case []byte:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: slices.Clone(x)}}
	case encoding.TextMarshaler:
		if b, err := x.MarshalText(); err == nil {
			return stringValue(string(b))
		}
	}
	if b, err := json.Marshal(x); err == nil {
		return stringValue(string(b))
	}
	return stringValue(fmt.Sprintf("%+v", x))
}

func kvlist(kvs []*commonpb.KeyValue) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: kvs}}}
}

func stringValue(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: validUTF8(s)}}
}

// validUTF8 replaces invalid UTF-8, which protobuf strings may not hold (a
// batch holding one such string could not be encoded at all).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
