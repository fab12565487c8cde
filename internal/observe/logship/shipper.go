package logship

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	"github.com/pedal-project/pedal/internal/retry"
	"github.com/pedal-project/pedal/internal/safehttp"
)

// Config configures a Shipper. Endpoint and Dir are required; every other
// field has a default.
type Config struct {
	// Endpoint is the URL batches are POSTed to, e.g.
	// http://127.0.0.1:4318/v1/logs (OTLP/HTTP with protobuf bodies).
	Endpoint string
	// Headers are added to every request (e.g. authorization).
	Headers map[string]string
	// Gzip compresses request bodies.
	Gzip bool
	// RootCAs verifies an https endpoint (default: the system's roots).
	RootCAs *x509.CertPool
	// Timeout bounds one request. Default 10s.
	Timeout time.Duration
	// Resource holds the resource attributes sent with every batch;
	// service.name defaults to "pedal".
	Resource map[string]string

	// Dir is the spool directory.
	Dir string
	// MaxSpoolBytes caps the spool; past it the oldest batches are dropped.
	// Default 64 MiB, at least 16 KiB.
	MaxSpoolBytes int64
	// MaxQueue caps the records held in memory between Handle and the
	// spool; past it the oldest are dropped. Default 2048, at most 2^20.
	MaxQueue int
	// BatchSize caps the records of one batch (one spool file, one request).
	// Default 512. A batch is also cut at 1 MiB or a quarter of
	// MaxSpoolBytes, whichever is smaller.
	BatchSize int
	// BatchDelay is how long records may wait in memory for a batch to fill.
	// Default 1s.
	BatchDelay time.Duration
	// MinBackoff and MaxBackoff bound the full-jitter wait after the n-th
	// consecutive failure: random(0, min(MaxBackoff, MinBackoff·2^n)).
	// Defaults 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration

	// Level is the least level shipped. Default slog.LevelInfo.
	Level slog.Leveler
	// ReportInterval is the least time between two lines about the
	// shipper's own problems on stderr. Default 10s.
	ReportInterval time.Duration
	// Now is the clock of that limit. Default time.Now.
	Now func() time.Time
}

const (
	minSpoolBytes = 16 << 10
	maxQueue      = 1 << 20 // records; the ring is allocated up front
)

func (c Config) withDefaults() (Config, error) {
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("logship: endpoint %q: want an http or https URL", c.Endpoint)
	}
	if c.Dir == "" {
		return c, errors.New("logship: no spool directory")
	}
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.Timeout, 10*time.Second)
	set(&c.BatchDelay, time.Second)
	set(&c.MinBackoff, 500*time.Millisecond)
	set(&c.MaxBackoff, 30*time.Second)
	set(&c.ReportInterval, 10*time.Second)
	if c.MaxSpoolBytes == 0 {
		c.MaxSpoolBytes = 64 << 20
	}
	if c.MaxSpoolBytes < minSpoolBytes {
		return c, fmt.Errorf("logship: spool cap %d bytes: want at least %d", c.MaxSpoolBytes, minSpoolBytes)
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 2048
	}
	if c.MaxQueue > maxQueue {
		return c, fmt.Errorf("logship: memory queue of %d records: want at most %d", c.MaxQueue, maxQueue)
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 512
	}
	c.BatchSize = min(c.BatchSize, c.MaxQueue)
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.Level == nil {
		c.Level = slog.LevelInfo
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Reasons records are dropped, the label values of
// pedal_log_export_dropped_records_total.
const (
	reasonQueueFull  = "queue_full"  // the memory queue was full
	reasonSpoolFull  = "spool_full"  // the spool was full: oldest batches deleted
	reasonSpoolError = "spool_error" // a batch could not be written to the spool
	reasonCorrupt    = "corrupt"     // a spool file failed its checksum
	reasonRejected   = "rejected"    // the endpoint refused them for good (4xx, partial success)
	reasonClosed     = "closed"      // logged after Close
)

type metrics struct {
	exported     prometheus.Counter
	dropped      *prometheus.CounterVec
	failures     prometheus.Counter
	spoolBytes   prometheus.Gauge
	spoolRecords prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		exported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_log_export_exported_records_total",
			Help: "Log records the OTLP endpoint accepted.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pedal_log_export_dropped_records_total",
			Help: "Log records given up on, by reason: queue_full, spool_full (oldest dropped past the spool cap), spool_error, corrupt, rejected (by the endpoint), closed.",
		}, []string{"reason"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pedal_log_export_failures_total",
			Help: "Export requests that failed (each retry counts).",
		}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pedal_log_export_spool_bytes",
			Help: "Bytes of log batches waiting in the on-disk spool.",
		}),
		spoolRecords: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pedal_log_export_spool_records",
			Help: "Log records waiting in the on-disk spool.",
		}),
	}
	for _, r := range []string{reasonQueueFull, reasonSpoolFull, reasonSpoolError, reasonCorrupt, reasonRejected, reasonClosed} {
		m.dropped.WithLabelValues(r)
	}
	return m
}

// Shipper ships log records to an OTLP/HTTP endpoint through an on-disk
// spool; see the package comment. Its goroutines start with New and stop with
// Close.
type Shipper struct {
	cfg    Config
	m      *metrics
	rep    *reporter
	spool  *spool
	q      queue
	client interface { // a safehttp client
		Do(*http.Request) (*http.Response, error)
		CloseIdleConnections()
	}
	resource *resourcepb.Resource
	scope    *commonpb.InstrumentationScope

	maxBatchBytes int
	wake          chan struct{} // a full batch is queued
	spooled       chan struct{} // a batch was spooled
	stopWriter    chan struct{}
	writerDone    chan struct{}
	draining      chan struct{} // the writer is done: the sender stops once the spool is empty
	senderDone    chan struct{}
	cancel        context.CancelFunc // stops the sender at once
	closeOnce     sync.Once
}

// New opens the spool in cfg.Dir (sending what an earlier process left there
// first), registers the metrics on reg and starts shipping. Problems of the
// shipper itself are written to stderr, rate-limited.
func New(cfg Config, reg prometheus.Registerer, stderr io.Writer) (*Shipper, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.Endpoint)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, fmt.Errorf("logship: endpoint %q: bad port", cfg.Endpoint)
	}
	m := newMetrics()
	rep := newReporter(stderr, "pedal: log export: ", cfg.ReportInterval, cfg.Now)
	sp, err := openSpool(cfg.Dir, cfg.MaxSpoolBytes, m, rep)
	if err != nil {
		return nil, err
	}
	s := &Shipper{
		cfg:   cfg,
		m:     m,
		rep:   rep,
		spool: sp,
		q:     queue{ring: make([]entry, cfg.MaxQueue)},
		// The endpoint is the operator's, so any address is allowed, but
		// only on its port; no proxy from the environment.
		client: safehttp.NewClient(safehttp.Config{
			AllowCIDRs:            []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
			AllowedPorts:          []uint16{uint16(p)},
			RootCAs:               cfg.RootCAs,
			Timeout:               cfg.Timeout,
			ResponseHeaderTimeout: cfg.Timeout,
			MaxBodyBytes:          1 << 20,
		}),
		resource:      resource(cfg.Resource),
		scope:         &commonpb.InstrumentationScope{Name: "github.com/pedal-project/pedal/internal/observe/logship"},
		maxBatchBytes: int(min(1<<20, cfg.MaxSpoolBytes/4)),
		wake:          make(chan struct{}, 1),
		spooled:       make(chan struct{}, 1),
		stopWriter:    make(chan struct{}),
		writerDone:    make(chan struct{}),
		draining:      make(chan struct{}),
		senderDone:    make(chan struct{}),
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pedal_log_export_queue_records",
		Help: "Log records in memory, waiting to be written to the spool.",
	}, func() float64 { return float64(s.q.len()) })
	for _, c := range []prometheus.Collector{m.exported, m.dropped, m.failures, m.spoolBytes, m.spoolRecords, queued} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("logship: register metrics: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.runWriter()
	go s.runSender(ctx)
	return s, nil
}

// resource builds the OTLP resource, service.name first, the rest sorted.
func resource(attrs map[string]string) *resourcepb.Resource {
	name := attrs["service.name"]
	if name == "" {
		name = "pedal"
	}
	r := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: stringValue(name)}}}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		if k != "service.name" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		r.Attributes = append(r.Attributes, &commonpb.KeyValue{Key: validUTF8(k), Value: stringValue(attrs[k])})
	}
	return r
}

// Handler returns a slog.Handler shipping records at cfg.Level and above.
func (s *Shipper) Handler() slog.Handler {
	return &handler{emit: s.enqueue, level: s.cfg.Level}
}

// enqueue queues lr for the writer without blocking: when the queue is full,
// the oldest record in it is dropped (and reported by the writer, so that
// not even a stuck stderr can hold up the caller).
func (s *Shipper) enqueue(lr *logspb.LogRecord) {
	full, dropped, closed := s.q.push(entry{rec: lr, size: proto.Size(lr)}, s.cfg.BatchSize, s.maxBatchBytes)
	switch {
	case closed:
		s.m.dropped.WithLabelValues(reasonClosed).Inc()
		return
	case dropped:
		s.m.dropped.WithLabelValues(reasonQueueFull).Inc()
	}
	if full {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// runWriter moves queued records to the spool: full batches when told, and
// everything queued every BatchDelay and on Close.
func (s *Shipper) runWriter() {
	defer close(s.writerDone)
	t := time.NewTicker(s.cfg.BatchDelay)
	defer t.Stop()
	for {
		select {
		case <-s.wake:
			s.flush(true)
		case <-t.C:
			s.flush(false)
		case <-s.stopWriter:
			s.flush(false)
			return
		}
	}
}

func (s *Shipper) flush(onlyFull bool) {
	if n := s.q.takeDropped(); n > 0 {
		s.rep.printf("queue", "memory queue full (%d records; the spool is not keeping up): dropped the oldest %d records", s.cfg.MaxQueue, n)
	}
	for {
		recs := s.q.take(s.cfg.BatchSize, s.maxBatchBytes, onlyFull)
		if len(recs) == 0 {
			return
		}
		req := &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
			Resource:  s.resource,
			ScopeLogs: []*logspb.ScopeLogs{{Scope: s.scope, LogRecords: recs}},
		}}}
		payload, err := proto.Marshal(req)
		if err != nil {
			s.m.dropped.WithLabelValues(reasonSpoolError).Add(float64(len(recs)))
			s.rep.printf("spool", "encode a batch of %d records (dropped): %v", len(recs), err)
			continue
		}
		if err := s.spool.append(len(recs), payload); err != nil {
			s.rep.printf("spool", "%v", err)
		}
		select {
		case s.spooled <- struct{}{}:
		default:
		}
	}
}

// runSender sends spooled batches, oldest first, until Close: at once while
// the endpoint takes them, after a growing full-jitter wait while it fails.
func (s *Shipper) runSender(ctx context.Context) {
	defer close(s.senderDone)
	failures := 0
	for {
		f, ok := s.spool.take()
		if !ok {
			select {
			case <-s.spooled:
				continue
			case <-s.draining:
				return // the writer is done and the spool empty
			case <-ctx.Done():
				return
			}
		}
		payload, err := s.spool.read(f)
		if errors.Is(err, fs.ErrNotExist) {
			s.spool.release(f) // dropped to make room meanwhile
			continue
		} else if err != nil {
			s.spool.discard(f, reasonCorrupt)
			s.rep.printf("spool", "spool file %s unreadable, %d records lost: %v", f.name, f.records, err)
			continue
		}
		rejected, err := s.post(ctx, payload)
		if err == nil {
			s.spool.delivered(f, rejected)
			failures = 0
			if rejected > 0 {
				s.rep.printf("rejected", "the endpoint rejected %d of %d records", rejected, f.records)
			}
			continue
		}
		if ctx.Err() != nil {
			s.spool.release(f)
			return
		}
		s.m.failures.Inc()
		var pe *permanentError
		if errors.As(err, &pe) {
			s.spool.discard(f, reasonRejected)
			s.rep.printf("rejected", "%v: %d records dropped", err, f.records)
			continue
		}
		s.spool.release(f)
		failures++
		n, b := s.spool.size()
		s.rep.printf("export", "%v; %d records (%d bytes) wait in the spool, retrying", err, n, b)
		wait := retry.FullJitter(s.cfg.MinBackoff, s.cfg.MaxBackoff, failures-1)
		var ra retryAfterError
		if errors.As(err, &ra) {
			wait = max(wait, min(time.Duration(ra), s.cfg.MaxBackoff))
		}
		if retry.Sleep(ctx, wait) != nil {
			return
		}
	}
}

// permanentError is a refusal that retrying cannot cure (OTLP: any status but
// 429, 502, 503 and 504).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

// retryAfterError is the Retry-After of a retryable answer.
type retryAfterError time.Duration

func (e retryAfterError) Error() string {
	return "retry after " + time.Duration(e).String()
}

// post sends one ExportLogsServiceRequest and returns how many records the
// endpoint rejected in a partial success.
func (s *Shipper) post(ctx context.Context, payload []byte) (rejected int, err error) {
	body := payload
	if s.cfg.Gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(payload)
		zw.Close()
		body = buf.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, &permanentError{fmt.Errorf("POST %s: %w", s.cfg.Endpoint, err)}
	}
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "pedal-logship")
	if s.cfg.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err // the url.Error names the method and URL
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, fmt.Errorf("POST %s: read answer: %w", s.cfg.Endpoint, err)
	}
	switch sc := resp.StatusCode; {
	case sc >= 200 && sc <= 299:
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-protobuf") || len(answer) == 0 {
			return 0, nil
		}
		var r collogspb.ExportLogsServiceResponse
		if err := proto.Unmarshal(answer, &r); err != nil {
			return 0, nil // accepted; an unreadable answer does not undo that
		}
		return int(r.GetPartialSuccess().GetRejectedLogRecords()), nil
	case sc == http.StatusTooManyRequests || sc == http.StatusBadGateway || sc == http.StatusServiceUnavailable || sc == http.StatusGatewayTimeout:
		err := fmt.Errorf("POST %s: %s", s.cfg.Endpoint, resp.Status)
		if secs, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && secs > 0 {
			err = errors.Join(err, retryAfterError(time.Duration(secs)*time.Second))
		}
		return 0, err
	default:
		return 0, &permanentError{fmt.Errorf("POST %s: %s: %s", s.cfg.Endpoint, resp.Status, snippet(answer))}
	}
}

// snippet is the start of an error answer, for the stderr line.
func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	if s == "" {
		return "(empty answer)"
	}
	return s
}

// Close stops taking records, writes those in memory to the spool, and sends
// the spool until it is empty or ctx is done; what is left stays on disk for
// the next start, and the error says how much. Records handed to the Handler
// after Close are counted as dropped (reason closed). Close may be called
// more than once.
func (s *Shipper) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.q.close()
		close(s.stopWriter)
		<-s.writerDone
		close(s.draining)
	})
	select {
	case <-s.senderDone:
	case <-ctx.Done():
	}
	s.cancel()
	<-s.senderDone
	s.client.CloseIdleConnections()
	s.rep.flush()
	if n, b := s.spool.size(); n > 0 {
		return fmt.Errorf("logship: %d log records (%d bytes) not delivered, kept in %s for the next start: %w", n, b, s.cfg.Dir, context.Cause(ctx))
	}
	return nil
}

// queue is the bounded ring of records between Handle and the writer.
type queue struct {
	mu     sync.Mutex
	ring   []entry
	head   int
	n      int
	bytes  int
	closed bool
	// dropped counts records dropped since the writer last reported.
	dropped int
}

type entry struct {
	rec  *logspb.LogRecord
	size int
}

// push appends e, dropping the oldest record when the ring is full. full
// reports that a batch (batch records or batchBytes bytes) is waiting.
func (q *queue) push(e entry, batch, batchBytes int) (full, dropped, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false, false, true
	}
	if q.n == len(q.ring) {
		q.bytes -= q.ring[q.head].size
		q.ring[q.head] = entry{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		q.dropped++
		dropped = true
	}
	q.ring[(q.head+q.n)%len(q.ring)] = e
	q.n++
	q.bytes += e.size
	return q.n >= batch || q.bytes >= batchBytes, dropped, false
}

// take removes and returns the oldest records, at most maxN of them and,
// beyond the first, at most maxBytes together. With onlyFull it takes nothing
// unless a full batch is waiting.
func (q *queue) take(maxN, maxBytes int, onlyFull bool) []*logspb.LogRecord {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 || onlyFull && q.n < maxN && q.bytes < maxBytes {
		return nil
	}
	var out []*logspb.LogRecord
	b := 0
	for q.n > 0 && len(out) < maxN {
		e := q.ring[q.head]
		if len(out) > 0 && b+e.size > maxBytes {
			break
		}
		out = append(out, e.rec)
		b += e.size
		q.bytes -= e.size
		q.ring[q.head] = entry{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
	}
	return out
}

func (q *queue) takeDropped() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.dropped
	q.dropped = 0
	return n
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
}
