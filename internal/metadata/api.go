// Package metadata is the URL-metadata collection service: the HTTP API of
// the seed's contract (POST /v1/metadata/collect, GET /v1/metadata/tasks/{id})
// and the Worker that carries tasks out.
//
// A task travels: API → taskstore (task row + outbox row, one transaction) →
// outbox relay → event log topic metadata.tasks → Worker → collect.Collector
// → taskstore (result + outbox row, one transaction) → relay → metadata.results.
//
// Invariants:
//   - A task answered 202 is stored with its outbox event; the relay and the
//     Worker deliver it at least once, and the Worker commits a partition's
//     position only past tasks that are finished, so a crash redelivers work
//     in progress and loses none.
//   - Processing is idempotent: a redelivered task that is finished is
//     skipped (taskstore.ErrFinished), one that was running is attempted again.
//   - The Worker runs at most Config.Workers tasks at once and at most
//     Config.PerHost per target host; tasks for a busy host wait without
//     holding a worker, so one slow site does not starve the others; beyond
//     Config.MaxWaitingPerHost waiting tasks of one host, more are deferred
//     (left QUEUED, requeued later) rather than fill the read-ahead.
//   - Taskstore.Requeue, run every minute by the relay role, publishes again
//     the request of a task left unfinished without a pending event (an
//     event marked FAILED, or dropped by log retention), so no accepted task
//     is lost for good.
//   - Every request that leaves the process goes through collect, hence safehttp.
//
// API and Worker are safe for concurrent use.
package metadata

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pedal-project/pedal/internal/httpjson"
	"github.com/pedal-project/pedal/internal/metadata/collect"
	"github.com/pedal-project/pedal/internal/metadata/taskstore"
	"github.com/pedal-project/pedal/internal/principal"
	"github.com/pedal-project/pedal/internal/safehttp"
)

// Limits of a collect request.
const (
	MaxURLBytes         = 2048
	MaxRequesterChars   = 128
	MaxIdempotencyKey   = 255
	maxRequestBodyBytes = 16 << 10
)

// API serves the metadata HTTP endpoints.
type API struct {
	store *taskstore.Store
	col   *collect.Collector
	est   *Estimator
	log   *slog.Logger
}

// NewAPI returns the API over store. col supplies the fetch policy and the
// option bounds; est the completion estimates.
func NewAPI(store *taskstore.Store, col *collect.Collector, est *Estimator, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{store: store, col: col, est: est, log: logger}
}

type collectRequest struct {
	TargetURL         *string            `json:"target_url"`
	RequestedBy       *string            `json:"requested_by"`
	ExtractionOptions *extractionOptions `json:"extraction_options"`
}

type extractionOptions struct {
	IncludeImages *bool           `json:"include_images"`
	MaxDepthBytes json.RawMessage `json:"max_depth_bytes"`
}

// CollectResponse is the 202 answer of POST /v1/metadata/collect.
type CollectResponse struct {
	TaskID                string    `json:"task_id"`
	Status                string    `json:"status"`
	EstimatedCompletionMS int64     `json:"estimated_completion_ms"`
	CreatedAt             time.Time `json:"created_at"`
}

// badRequest is a 400 naming the offending member.
type badRequest struct {
	param, detail, reason string
}

func (e *badRequest) Error() string { return e.detail }

// HandleCollect serves POST /v1/metadata/collect.
func (a *API) HandleCollect() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
				httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusUnsupportedMediaType,
					Detail: fmt.Sprintf("Content-Type %q: send application/json", ct)})
				return
			}
		}
		key := r.Header.Get("Idempotency-Key")
		if _, ok := r.Header["Idempotency-Key"]; ok && !validKey(key) {
			writeBad(w, r, &badRequest{param: "Idempotency-Key", reason: "invalid",
				detail: fmt.Sprintf("Idempotency-Key: want 1 to %d printable ASCII characters", MaxIdempotencyKey)})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBodyBytes))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusRequestEntityTooLarge,
					Detail: fmt.Sprintf("request body larger than %d bytes", maxRequestBodyBytes)})
				return
			}
			httpjson.Error(w, r, a.log, http.StatusBadRequest, "could not read the request body", err)
			return
		}
		nt, opts, err := a.parse(body)
		if err != nil {
			var bad *badRequest
			if errors.As(err, &bad) {
				writeBad(w, r, bad)
				return
			}
			httpjson.Error(w, r, a.log, http.StatusBadRequest, err.Error(), err)
			return
		}
		if p, ok := principal.From(r.Context()); ok && !p.IsAdmin() && p.Subject != nt.RequestedBy {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusForbidden,
				Detail:     "requested_by must be your own subject (only an admin may ask on behalf of another)",
				Extensions: map[string]any{"parameter": "requested_by"}})
			return
		}
		if key != "" {
			// Keys are the requester's own: another's use of the same key is
			// another request, not a conflict.
			nt.IdempotencyKey = scopedKey(nt.RequestedBy, key)
			nt.RequestHash = requestHash(nt.TargetURL, nt.RequestedBy, opts)
		}
		t, created, err := a.store.CreateTask(r.Context(), nt)
		switch {
		case errors.Is(err, taskstore.ErrIdempotencyConflict):
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusUnprocessableEntity,
				Detail:     "Idempotency-Key was used within 24h for a different request; use a new key for a new request",
				Extensions: map[string]any{"parameter": "Idempotency-Key"}})
			return
		case err != nil:
			w.Header().Set("Retry-After", "1")
			httpjson.Error(w, r, a.log, http.StatusServiceUnavailable, "the task could not be stored; retry with the same Idempotency-Key", err)
			return
		}
		resp := CollectResponse{TaskID: t.ID, Status: string(t.Status), CreatedAt: t.CreatedAt}
		if t.Status == taskstore.Queued || t.Status == taskstore.Running {
			queued, running, err := a.store.QueueDepth(r.Context())
			if err != nil {
				a.log.WarnContext(r.Context(), "queue depth for the estimate", "err", err)
			}
			if created {
				queued-- // not ahead of itself
			}
			resp.EstimatedCompletionMS = a.est.Estimate(max(queued, 0), running).Milliseconds()
		}
		w.Header().Set("Location", "/v1/metadata/tasks/"+t.ID)
		if !created {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		httpjson.Encode(w, http.StatusAccepted, resp)
	})
}

func writeBad(w http.ResponseWriter, r *http.Request, bad *badRequest) {
	ext := map[string]any{"parameter": bad.param}
	if bad.reason != "" {
		ext["reason"] = bad.reason
	}
	httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: bad.detail, Extensions: ext})
}

// parse decodes and validates a collect request.
func (a *API) parse(body []byte) (taskstore.NewTask, collect.Options, error) {
	var req collectRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return taskstore.NewTask{}, collect.Options{}, decodeError(err)
	}
	if dec.More() {
		return taskstore.NewTask{}, collect.Options{}, &badRequest{param: "body", detail: "the body holds more than one JSON value"}
	}
	if req.TargetURL == nil || *req.TargetURL == "" {
		return taskstore.NewTask{}, collect.Options{}, &badRequest{param: "target_url", reason: "missing", detail: "target_url is required"}
	}
	target := *req.TargetURL
	if len(target) > MaxURLBytes {
		return taskstore.NewTask{}, collect.Options{}, &badRequest{param: "target_url", reason: "too_long",
			detail: fmt.Sprintf("target_url is %d bytes; the limit is %d", len(target), MaxURLBytes)}
	}
	if _, err := safehttp.Validate(target, a.col.Config().Fetch); err != nil {
		return taskstore.NewTask{}, collect.Options{}, urlError(err)
	}
	if req.RequestedBy == nil {
		return taskstore.NewTask{}, collect.Options{}, &badRequest{param: "requested_by", reason: "missing", detail: "requested_by is required"}
	}
	by := *req.RequestedBy
	if n := utf8.RuneCountInString(by); n < 1 || n > MaxRequesterChars || strings.TrimSpace(by) == "" ||
		strings.IndexFunc(by, unicode.IsControl) >= 0 {
		return taskstore.NewTask{}, collect.Options{}, &badRequest{param: "requested_by", reason: "invalid",
			detail: fmt.Sprintf("requested_by must be 1 to %d characters, not blank, without control characters", MaxRequesterChars)}
	}
	var opts collect.Options
	if o := req.ExtractionOptions; o != nil {
		if o.IncludeImages != nil {
			opts.IncludeImages = *o.IncludeImages
		}
		if len(o.MaxDepthBytes) > 0 && string(o.MaxDepthBytes) != "null" {
			n, err := strconv.ParseInt(string(o.MaxDepthBytes), 10, 64)
			if err != nil {
				return taskstore.NewTask{}, collect.Options{}, &badRequest{param: "extraction_options.max_depth_bytes", reason: "not_integer",
					detail: fmt.Sprintf("extraction_options.max_depth_bytes must be an integer, got %s", o.MaxDepthBytes)}
			}
			if limit := a.col.Config().MaxDepthBytes; n < collect.MinDepthBytes || n > limit {
				return taskstore.NewTask{}, collect.Options{}, &badRequest{param: "extraction_options.max_depth_bytes", reason: "out_of_range",
					detail: fmt.Sprintf("extraction_options.max_depth_bytes %d: want an integer from %d to %d", n, collect.MinDepthBytes, limit)}
			}
			opts.MaxDepthBytes = n
		}
	}
	if err := a.col.CheckOptions(&opts); err != nil { // fills in the default
		return taskstore.NewTask{}, collect.Options{}, err
	}
	raw, err := json.Marshal(opts)
	if err != nil {
		return taskstore.NewTask{}, collect.Options{}, err
	}
	return taskstore.NewTask{TargetURL: target, RequestedBy: by, Options: raw}, opts, nil
}

func decodeError(err error) error {
	var (
		typeErr *json.UnmarshalTypeError
		synErr  *json.SyntaxError
	)
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return &badRequest{param: "body", detail: "the body must be a JSON object"}
		}
		want := typeErr.Type.String()
		switch want {
		case "string":
		case "bool":
			want = "boolean"
		default:
			want = "object"
		}
		return &badRequest{param: field, reason: "wrong_type", detail: fmt.Sprintf("%s must be a %s, got a JSON %s", field, want, typeErr.Value)}
	case errors.As(err, &synErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &badRequest{param: "body", detail: "the body is not valid JSON: " + err.Error()}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &badRequest{param: name, reason: "unknown", detail: fmt.Sprintf("unknown member %q; the request takes target_url, requested_by and extraction_options {include_images, max_depth_bytes}", name)}
	}
	return &badRequest{param: "body", detail: "the body could not be decoded: " + err.Error()}
}

// urlError explains a refusal of safehttp.Validate.
func urlError(err error) error {
	var be *safehttp.BlockedError
	reason := "invalid_url"
	if errors.As(err, &be) {
		reason = be.Reason
	}
	detail := "target_url is not a valid URL"
	switch reason {
	case "invalid_url":
	case "scheme":
		detail = "target_url must be an http or https URL"
	case "userinfo":
		detail = "target_url must not contain a user name or password"
	case "host":
		detail = "target_url must name a valid host"
	case "port":
		detail = "target_url names a port that may not be fetched"
	default:
		detail = fmt.Sprintf("target_url points to an address that may not be fetched (%s)", reason)
	}
	return &badRequest{param: "target_url", reason: reason, detail: detail}
}

func validKey(k string) bool {
	if k == "" || len(k) > MaxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// requestHash identifies a request by its meaning after defaults, so that
// `{}` options and the same options spelled out are the same request.
func requestHash(target, by string, o collect.Options) string {
	b, _ := json.Marshal(struct {
		T string          `json:"target_url"`
		B string          `json:"requested_by"`
		O collect.Options `json:"extraction_options"`
	}{target, by, o})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// scopedKey is the stored form of a requester's idempotency key.
func scopedKey(requester, key string) string {
	sum := sha256.Sum256([]byte(requester + "\x00" + key))
	return "k_" + hex.EncodeToString(sum[:])
}

// TaskResponse is the answer of GET /v1/metadata/tasks/{task_id}.
type TaskResponse struct {
	TaskID            string          `json:"task_id"`
	Status            string          `json:"status"`
	Attempts          int             `json:"attempts"`
	TargetURL         string          `json:"target_url"`
	FinalURL          string          `json:"final_url,omitempty"`
	RequestedBy       string          `json:"requested_by"`
	ExtractionOptions json.RawMessage `json:"extraction_options"`
	CreatedAt         time.Time       `json:"created_at"`
	UpdatedAt         time.Time       `json:"updated_at"`
	StartedAt         *time.Time      `json:"started_at,omitempty"`
	FinishedAt        *time.Time      `json:"finished_at,omitempty"`
	Result            json.RawMessage `json:"result,omitempty"`
	Error             *TaskError      `json:"error,omitempty"`
}

// TaskError is why a task failed.
type TaskError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

var taskIDPattern = regexp.MustCompile(`^tsk_[0-9A-HJKMNP-TV-Z]{26}$`)

// HandleTask serves GET /v1/metadata/tasks/{task_id}.
func (a *API) HandleTask() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("task_id")
		if !taskIDPattern.MatchString(id) {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusNotFound,
				Detail: fmt.Sprintf("no task %q: task ids are tsk_ followed by 26 characters", id)})
			return
		}
		t, err := a.store.GetTask(r.Context(), id)
		switch {
		case errors.Is(err, taskstore.ErrNotFound):
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusNotFound, Detail: fmt.Sprintf("no task %s", id)})
			return
		case err != nil:
			w.Header().Set("Retry-After", "1")
			httpjson.Error(w, r, a.log, http.StatusServiceUnavailable, "the task could not be read; retry", err)
			return
		}
		if p, ok := principal.From(r.Context()); ok && !p.IsAdmin() && p.Subject != t.RequestedBy {
			// Another's task is not there, as far as this caller can tell.
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusNotFound, Detail: fmt.Sprintf("no task %s", id)})
			return
		}
		httpjson.Encode(w, http.StatusOK, taskResponse(t))
	})
}

func taskResponse(t taskstore.Task) TaskResponse {
	resp := TaskResponse{
		TaskID: t.ID, Status: string(t.Status), Attempts: t.Attempts, TargetURL: t.TargetURL, FinalURL: t.FinalURL,
		RequestedBy: t.RequestedBy, ExtractionOptions: t.Options, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
		Result: t.Result,
	}
	if !t.StartedAt.IsZero() {
		resp.StartedAt = &t.StartedAt
	}
	if !t.FinishedAt.IsZero() {
		resp.FinishedAt = &t.FinishedAt
	}
	if t.Status == taskstore.Failed {
		resp.Error = &TaskError{Code: t.ErrorCode, Message: t.ErrorMessage}
	}
	return resp
}
