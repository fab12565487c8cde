// Package httpjson encodes JSON responses and RFC 9457 problem details for pedal's
// HTTP APIs. It holds no state; every function is safe for concurrent use.
package httpjson

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
)

// Encode writes v as JSON with the given status.
func Encode(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// Problem is an RFC 9457 problem details object. Extensions are merged into the
// top-level object.
type Problem struct {
	Type       string         `json:"type,omitempty"`
	Title      string         `json:"title"`
	Status     int            `json:"status"`
	Detail     string         `json:"detail,omitempty"`
	Instance   string         `json:"instance,omitempty"`
	Extensions map[string]any `json:"-"`
}

// MarshalJSON flattens Extensions beside the standard members.
func (p Problem) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 5+len(p.Extensions))
	for k, v := range p.Extensions {
		m[k] = v
	}
	if p.Type != "" {
		m["type"] = p.Type
	}
	m["title"] = p.Title
	m["status"] = p.Status
	if p.Detail != "" {
		m["detail"] = p.Detail
	}
	if p.Instance != "" {
		m["instance"] = p.Instance
	}
	return json.Marshal(m)
}

// WriteProblem sends p as application/problem+json. Title defaults to the status text.
func WriteProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	if p.Instance == "" && r != nil {
		p.Instance = r.URL.Path
	}
	b, err := json.Marshal(p)
	if err != nil {
		http.Error(w, p.Title, p.Status)
		return
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(p.Status)
	w.Write(append(b, '\n'))
}

// Error sends a problem with status and a client-safe detail. For 5xx statuses the
// underlying err is logged (never sent) with the request's context.
func Error(w http.ResponseWriter, r *http.Request, logger *slog.Logger, status int, detail string, err error) {
	if status >= 500 && err != nil && logger != nil {
		logger.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	WriteProblem(w, r, Problem{Status: status, Detail: detail})
}
