// Package ingest serves the click ingestion API: POST /v1/clicks (JSON or NDJSON
// batches) and the redirect clicks GET /v1/r/{token}. A request is answered only
// once every click it accepted is durable in the event log; invalid records are
// refused one by one while the valid ones of the same request are kept.
//
// Handlers are safe for concurrent use. Memory is bounded: at most
// Config.MaxInFlightBytes of request bodies are held at once, and a request that
// cannot get its share within Config.QueueTimeout is answered 503.
package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/eventlog"
	"github.com/pedal-project/pedal/internal/httpjson"
)

// Appender is the part of the event log that ingestion needs.
type Appender interface {
	Append(ctx context.Context, topic string, recs []eventlog.Record) error
}

// Config tunes the handlers. The zero value gives the documented defaults.
type Config struct {
	Partitions       int32         // partitions of the clicks topic; default 16
	MaxBodyBytes     int64         // default 8 MiB; larger bodies get 413
	MaxEventAge      time.Duration // default 168h
	MaxInFlightBytes int64         // request bodies held at once; default 256 MiB
	QueueTimeout     time.Duration // wait for in-flight room before 503; default 1s
	Now              func() time.Time
}

func (c *Config) setDefaults() {
	if c.Partitions <= 0 {
		c.Partitions = 16
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 8 << 20
	}
	if c.MaxEventAge <= 0 {
		c.MaxEventAge = 168 * time.Hour
	}
	if c.MaxInFlightBytes <= 0 {
		c.MaxInFlightBytes = 256 << 20
	}
	if c.MaxInFlightBytes < c.MaxBodyBytes {
		c.MaxInFlightBytes = c.MaxBodyBytes
	}
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Service holds the state shared by the ingestion handlers.
type Service struct {
	cfg    Config
	log    Appender
	logger *slog.Logger
	m      *metrics
	room   *semaphore.Weighted
	pool   sync.Pool // of *state
}

// state is the per-request scratch memory, pooled.
type state struct {
	body  bytes.Buffer
	dec   clicks.Decoder
	batch clicks.Batch
	recs  []eventlog.Record
	out   []byte
}

// New returns the ingestion service.
func New(cfg Config, log Appender, logger *slog.Logger, reg prometheus.Registerer) *Service {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: log, logger: logger, m: newMetrics(reg), room: semaphore.NewWeighted(cfg.MaxInFlightBytes)}
	s.pool.New = func() any { return &state{dec: clicks.Decoder{MaxEventAge: cfg.MaxEventAge}} }
	return s
}

// ingestResponse is the 202 body.
type ingestResponse struct {
	Accepted int                `json:"accepted"`
	Rejected []clicks.Rejection `json:"rejected"`
}

// HandleClicks serves POST /v1/clicks.
func (s *Service) HandleClicks() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ndjson, ok := s.contentType(w, r)
		if !ok {
			return
		}
		if r.ContentLength > s.cfg.MaxBodyBytes {
			s.tooLarge(w, r)
			return
		}
		// Reserve room for the body before reading it.
		need := r.ContentLength
		if need < 0 {
			need = s.cfg.MaxBodyBytes
		}
		need = max(need, 1)
		qctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueueTimeout)
		err := s.room.Acquire(qctx, need)
		cancel()
		if err != nil {
			s.m.saturated.Inc()
			unavailable(w, r, "the server is saturated; retry later")
			return
		}
		defer s.room.Release(need)

		st := s.pool.Get().(*state)
		defer s.release(st)
		if r.ContentLength > 0 {
			st.body.Grow(int(r.ContentLength))
		}
		if _, err := st.body.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				s.tooLarge(w, r)
				return
			}
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: "reading the request body failed: " + err.Error()})
			return
		}
		body := st.body.Bytes()
		if len(bytes.TrimSpace(body)) == 0 {
			s.m.requests.WithLabelValues("empty").Inc()
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: "the request body is empty; send a click object, an array of them, or NDJSON lines"})
			return
		}
		now := s.cfg.Now()
		if ndjson {
			err = st.dec.DecodeNDJSON(body, now, &st.batch)
		} else {
			err = st.dec.DecodeJSON(body, now, &st.batch)
		}
		if err != nil {
			s.m.requests.WithLabelValues("malformed").Inc()
			var fe *clicks.FramingError
			if errors.As(err, &fe) {
				ext := map[string]any{"offset": fe.Offset}
				if fe.Line > 0 {
					ext["line"] = fe.Line
				}
				httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: "malformed body: " + fe.Error(), Extensions: ext})
				return
			}
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: err.Error()})
			return
		}
		for _, rej := range st.batch.Rejected {
			s.m.rejected(rej.Code).Inc()
		}
		if st.batch.Len() == 0 {
			s.m.requests.WithLabelValues("all_rejected").Inc()
			httpjson.WriteProblem(w, r, httpjson.Problem{
				Status:     http.StatusBadRequest,
				Detail:     fmt.Sprintf("none of the %d records is valid; see rejected", len(st.batch.Rejected)),
				Extensions: map[string]any{"rejected": st.batch.Rejected},
			})
			return
		}
		st.recs = st.batch.Records(st.recs[:0], s.cfg.Partitions)
		if !s.append(w, r, st.recs) {
			return
		}
		s.m.requests.WithLabelValues("accepted").Inc()
		s.m.accepted.Add(float64(len(st.recs)))
		s.writeAccepted(w, st)
	})
}

// append makes recs durable, answering 503 when it cannot.
func (s *Service) append(w http.ResponseWriter, r *http.Request, recs []eventlog.Record) bool {
	// Once started, an append finishes even if the client goes away: it may
	// already be in the log, and the client may retry.
	err := s.log.Append(context.WithoutCancel(r.Context()), clicks.Topic, recs)
	if err == nil {
		return true
	}
	s.m.appendErrors.Inc()
	switch {
	case errors.Is(err, eventlog.ErrFull):
		unavailable(w, r, "the click log is full; retry later")
	case errors.Is(err, eventlog.ErrClosed):
		unavailable(w, r, "the server is shutting down; retry on another instance or later")
	default:
		s.logger.ErrorContext(r.Context(), "append clicks", "err", err, "records", len(recs))
		unavailable(w, r, "the click log is unavailable; nothing from this request was acknowledged, retry later")
	}
	return false
}

func (s *Service) writeAccepted(w http.ResponseWriter, st *state) {
	b := append(st.out[:0], `{"accepted":`...)
	b = strconv.AppendInt(b, int64(st.batch.Len()), 10)
	b = append(b, `,"rejected":`...)
	if len(st.batch.Rejected) == 0 {
		b = append(b, "[]}\n"...)
	} else {
		rej, _ := json.Marshal(st.batch.Rejected)
		b = append(b, rej...)
		b = append(b, "}\n"...)
	}
	st.out = b
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusAccepted)
	w.Write(b)
}

var jsonContentType = []string{"application/json"}

func (s *Service) release(st *state) {
	if st.body.Cap() > 1<<20 {
		st.body = bytes.Buffer{} // do not keep huge buffers
	}
	st.body.Reset()
	st.batch.Reset()
	clear(st.recs)
	st.recs = st.recs[:0]
	s.pool.Put(st)
}

// contentType checks the request's media type: application/json or
// application/x-ndjson (also application/ndjson and application/jsonl).
func (s *Service) contentType(w http.ResponseWriter, r *http.Request) (ndjson, ok bool) {
	ct := r.Header.Get("Content-Type")
	switch ct { // fast path for the exact common values
	case "application/json":
		return false, true
	case "application/x-ndjson":
		return true, true
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil {
		if cs, ok := params["charset"]; ok && cs != "utf-8" && cs != "UTF-8" {
			err = fmt.Errorf("charset %q is not supported; send UTF-8", cs)
		}
	}
	if err == nil {
		switch mt {
		case "application/json":
			return false, true
		case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
			return true, true
		}
	}
	s.m.requests.WithLabelValues("unsupported_media_type").Inc()
	detail := fmt.Sprintf("Content-Type %q is not supported; send application/json or application/x-ndjson", ct)
	if ct == "" {
		detail = "Content-Type is missing; send application/json or application/x-ndjson"
	}
	w.Header().Set("Accept-Post", "application/json, application/x-ndjson")
	httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusUnsupportedMediaType, Detail: detail})
	return false, false
}

func (s *Service) tooLarge(w http.ResponseWriter, r *http.Request) {
	s.m.requests.WithLabelValues("too_large").Inc()
	httpjson.WriteProblem(w, r, httpjson.Problem{
		Status: http.StatusRequestEntityTooLarge,
		Detail: fmt.Sprintf("the request body is larger than %d bytes; split the batch", s.cfg.MaxBodyBytes),
	})
}

func unavailable(w http.ResponseWriter, r *http.Request, detail string) {
	w.Header().Set("Retry-After", "1")
	httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusServiceUnavailable, Detail: detail})
}
