package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/pedal-project/pedal/internal/gateway/routedb"
	"github.com/pedal-project/pedal/internal/httpjson"
	"github.com/pedal-project/pedal/internal/principal"
)

// RouteJSON is a route as the admin API shows and takes it.
type RouteJSON struct {
	RouteID            string    `json:"route_id"`
	PathPattern        string    `json:"path_pattern"`
	TargetCluster      string    `json:"target_cluster"`
	MaxConcurrency     int       `json:"max_concurrency"`
	IsActive           bool      `json:"is_active"`
	Auth               string    `json:"auth"`
	TimeoutMS          int64     `json:"timeout_ms"`
	RateLimitPerMinute int       `json:"rate_limit_per_minute"`
	RateLimitBurst     int       `json:"rate_limit_burst"`
	CreatedAt          time.Time `json:"created_at"`
	UpdatedAt          time.Time `json:"updated_at"`
}

func routeJSON(r routedb.Route) RouteJSON {
	return RouteJSON{RouteID: r.ID, PathPattern: r.PathPattern, TargetCluster: r.TargetCluster, MaxConcurrency: r.MaxConcurrency,
		IsActive: r.IsActive, Auth: r.Auth, TimeoutMS: r.Timeout.Milliseconds(), RateLimitPerMinute: r.RateLimitPerMinute,
		RateLimitBurst: r.RateLimitBurst, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// routeRequest is the body of PUT /v1/admin/routes/{route_id}; absent members
// take the seed's defaults (max_concurrency 1000, is_active true) and the
// policy's (auth authenticated, timeout 30 s, no rate limit).
type routeRequest struct {
	PathPattern        *string `json:"path_pattern"`
	TargetCluster      *string `json:"target_cluster"`
	MaxConcurrency     *int    `json:"max_concurrency"`
	IsActive           *bool   `json:"is_active"`
	Auth               *string `json:"auth"`
	TimeoutMS          *int64  `json:"timeout_ms"`
	RateLimitPerMinute *int    `json:"rate_limit_per_minute"`
	RateLimitBurst     *int    `json:"rate_limit_burst"`
}

// ClusterJSON is a cluster as the admin API shows and takes it.
type ClusterJSON struct {
	Cluster        string   `json:"cluster"`
	Kind           string   `json:"kind"`
	Balancing      string   `json:"balancing"`
	MaxConcurrency int      `json:"max_concurrency"`
	HealthPath     string   `json:"health_path,omitempty"`
	Endpoints      []string `json:"endpoints"`
	BreakerState   string   `json:"breaker_state,omitempty"`
}

// AdminHandler serves the admin API; route it (admin role only) as an
// in-process cluster:
//
//	GET    /v1/admin/routes                 every route, the clusters, the version served and the last refused change
//	GET    /v1/admin/routes/{route_id}
//	PUT    /v1/admin/routes/{route_id}      create or replace; 400 invalid, 409 pattern conflict
//	DELETE /v1/admin/routes/{route_id}
//	PUT    /v1/admin/clusters/{cluster}     create or replace an http cluster
//
// A change is validated against the whole configuration before it is stored,
// and served within a moment (the gateway reloads at once).
func (g *Gateway) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/admin/routes", g.listRoutes)
	mux.HandleFunc("GET /v1/admin/routes/{route_id}", g.getRoute)
	mux.HandleFunc("PUT /v1/admin/routes/{route_id}", g.putRoute)
	mux.HandleFunc("DELETE /v1/admin/routes/{route_id}", g.deleteRoute)
	mux.HandleFunc("PUT /v1/admin/clusters/{cluster}", g.putCluster)
	return mux
}

func (g *Gateway) listRoutes(w http.ResponseWriter, r *http.Request) {
	cfg, err := g.store.Load(r.Context())
	if err != nil {
		httpjson.Error(w, r, g.log, http.StatusServiceUnavailable, "the routes could not be read", err)
		return
	}
	out := struct {
		Status
		StoredVersion int64         `json:"stored_version"`
		Routes        []RouteJSON   `json:"routes"`
		Clusters      []ClusterJSON `json:"clusters"`
	}{Status: g.Status(), StoredVersion: cfg.Version, Routes: []RouteJSON{}, Clusters: []ClusterJSON{}}
	for _, rt := range cfg.Routes {
		out.Routes = append(out.Routes, routeJSON(rt))
	}
	for _, c := range cfg.Clusters {
		cj := ClusterJSON{Cluster: c.Name, Kind: c.Kind, Balancing: c.Balancing, MaxConcurrency: c.MaxConcurrency,
			HealthPath: c.HealthPath, Endpoints: c.Endpoints}
		if cj.Endpoints == nil {
			cj.Endpoints = []string{}
		}
		g.mu.Lock()
		if cs, ok := g.clusters[c.Name]; ok {
			cj.BreakerState = cs.breaker.State().String()
		}
		g.mu.Unlock()
		out.Clusters = append(out.Clusters, cj)
	}
	httpjson.Encode(w, http.StatusOK, out)
}

func (g *Gateway) getRoute(w http.ResponseWriter, r *http.Request) {
	rt, err := g.store.GetRoute(r.Context(), r.PathValue("route_id"))
	switch {
	case errors.Is(err, routedb.ErrNotFound):
		httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusNotFound, Detail: "no route " + r.PathValue("route_id")})
	case err != nil:
		httpjson.Error(w, r, g.log, http.StatusServiceUnavailable, "the route could not be read", err)
	default:
		httpjson.Encode(w, http.StatusOK, routeJSON(rt))
	}
}

func decodeStrict(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &ValidationError{Field: "body", Msg: "not a valid JSON object of the expected members: " + err.Error(), Err: err}
	}
	return nil
}

func writeValidation(w http.ResponseWriter, r *http.Request, err error) bool {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return false
	}
	status := http.StatusBadRequest
	if ve.Conflict {
		status = http.StatusConflict
	}
	httpjson.WriteProblem(w, r, httpjson.Problem{Status: status, Detail: err.Error(), Extensions: map[string]any{"parameter": ve.Field}})
	return true
}

func (g *Gateway) putRoute(w http.ResponseWriter, r *http.Request) {
	var req routeRequest
	if err := decodeStrict(r, &req); err != nil {
		writeValidation(w, r, err)
		return
	}
	rt := routedb.Route{ID: r.PathValue("route_id"), MaxConcurrency: 1000, IsActive: true, Auth: routedb.AuthAuthenticated,
		Timeout: 30 * time.Second}
	if req.PathPattern == nil || req.TargetCluster == nil {
		writeValidation(w, r, &ValidationError{Field: "path_pattern", Msg: "path_pattern and target_cluster are required"})
		return
	}
	rt.PathPattern, rt.TargetCluster = *req.PathPattern, *req.TargetCluster
	if req.MaxConcurrency != nil {
		rt.MaxConcurrency = *req.MaxConcurrency
	}
	if req.IsActive != nil {
		rt.IsActive = *req.IsActive
	}
	if req.Auth != nil {
		rt.Auth = *req.Auth
	}
	if req.TimeoutMS != nil {
		rt.Timeout = time.Duration(*req.TimeoutMS) * time.Millisecond
	}
	if req.RateLimitPerMinute != nil {
		rt.RateLimitPerMinute = *req.RateLimitPerMinute
	}
	if req.RateLimitBurst != nil {
		rt.RateLimitBurst = *req.RateLimitBurst
	}
	// Validate the whole configuration as it would be with this route, and
	// store it, with no other change of this gateway in between (two
	// overlapping patterns validated apart would both pass).
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	cfg, err := g.store.Load(r.Context())
	if err != nil {
		httpjson.Error(w, r, g.log, http.StatusServiceUnavailable, "the routes could not be read", err)
		return
	}
	replaced := false
	for i := range cfg.Routes {
		if cfg.Routes[i].ID == rt.ID {
			cfg.Routes[i], replaced = rt, true
		}
	}
	if !replaced {
		cfg.Routes = append(cfg.Routes, rt)
	}
	if err := g.check(cfg, rt); err != nil {
		if !writeValidation(w, r, err) {
			httpjson.Error(w, r, g.log, http.StatusBadRequest, err.Error(), nil)
		}
		return
	}
	stored, created, err := g.store.PutRoute(r.Context(), rt)
	switch {
	case errors.Is(err, routedb.ErrConflict):
		httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusConflict, Detail: "another active route has this path_pattern",
			Extensions: map[string]any{"parameter": "path_pattern"}})
		return
	case errors.Is(err, routedb.ErrConstraint):
		httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: err.Error()})
		return
	case err != nil:
		httpjson.Error(w, r, g.log, http.StatusServiceUnavailable, "the route could not be stored", err)
		return
	}
	g.Reload()
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	g.log.InfoContext(r.Context(), "route stored", "route", rt.ID, "pattern", rt.PathPattern, "cluster", rt.TargetCluster, "by", who(r))
	httpjson.Encode(w, status, routeJSON(stored))
}

// check validates cfg for a change to route changed, naming the route's own
// fault first and a conflict with another route as such.
func (g *Gateway) check(cfg routedb.Config, changed routedb.Route) error {
	g.localize(&cfg)
	clusters := map[string]routedb.Cluster{}
	for _, c := range cfg.Clusters {
		clusters[c.Name] = c
	}
	if err := validateRoute(changed, clusters, g.inproc); err != nil {
		return err
	}
	_, err := buildTable(cfg, g.inproc, func(c routedb.Cluster) (*cluster, error) { return &cluster{name: c.Name}, nil },
		func(string) *atomic.Int64 { return new(atomic.Int64) })
	return err
}

func (g *Gateway) deleteRoute(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("route_id")
	err := g.store.DeleteRoute(r.Context(), id)
	switch {
	case errors.Is(err, routedb.ErrNotFound):
		httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusNotFound, Detail: "no route " + id})
		return
	case err != nil:
		httpjson.Error(w, r, g.log, http.StatusServiceUnavailable, "the route could not be deleted", err)
		return
	}
	g.Reload()
	g.log.InfoContext(r.Context(), "route deleted", "route", id, "by", who(r))
	w.WriteHeader(http.StatusNoContent)
}

func (g *Gateway) putCluster(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind           string   `json:"kind"`
		Balancing      string   `json:"balancing"`
		MaxConcurrency int      `json:"max_concurrency"`
		HealthPath     string   `json:"health_path"`
		Endpoints      []string `json:"endpoints"`
	}
	if err := decodeStrict(r, &req); err != nil {
		writeValidation(w, r, err)
		return
	}
	c := routedb.Cluster{Name: r.PathValue("cluster"), Kind: req.Kind, Balancing: req.Balancing, MaxConcurrency: req.MaxConcurrency,
		HealthPath: req.HealthPath, Endpoints: req.Endpoints}
	if c.Kind == "" {
		c.Kind = routedb.KindHTTP
	}
	if c.Balancing == "" {
		c.Balancing = routedb.RoundRobin
	}
	if c.MaxConcurrency == 0 {
		c.MaxConcurrency = 1000
	}
	if c.Kind == routedb.KindInProcess || g.inproc[c.Name] != nil {
		writeValidation(w, r, &ValidationError{Field: "kind", Msg: "in-process clusters are this binary's own; only http clusters can be added or changed"})
		return
	}
	if cfg, err := g.store.Load(r.Context()); err == nil {
		for _, old := range cfg.Clusters {
			if old.Name == c.Name && old.Kind == routedb.KindInProcess {
				writeValidation(w, r, &ValidationError{Field: "cluster", Msg: fmt.Sprintf("%q is an in-process cluster; it cannot become an http one", c.Name)})
				return
			}
		}
	}
	if err := validateCluster(c, g.inproc); err != nil {
		writeValidation(w, r, err)
		return
	}
	if err := g.store.PutCluster(r.Context(), c); err != nil {
		if errors.Is(err, routedb.ErrConstraint) {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: err.Error()})
			return
		}
		httpjson.Error(w, r, g.log, http.StatusServiceUnavailable, "the cluster could not be stored", err)
		return
	}
	g.Reload()
	g.log.InfoContext(r.Context(), "cluster stored", "cluster", c.Name, "endpoints", c.Endpoints, "by", who(r))
	httpjson.Encode(w, http.StatusOK, ClusterJSON{Cluster: c.Name, Kind: c.Kind, Balancing: c.Balancing,
		MaxConcurrency: c.MaxConcurrency, HealthPath: c.HealthPath, Endpoints: c.Endpoints})
}

func who(r *http.Request) string {
	if p, ok := principal.From(r.Context()); ok {
		return p.Subject
	}
	return ""
}

// RevokeHandler serves POST /v1/auth/revoke: `{"token": "…"}` revokes that
// token, which must be the caller's own unless the caller is an admin; an
// empty body revokes the token the request was made with. Route it as an
// authenticated in-process cluster.
func (g *Gateway) RevokeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, ok := principal.From(r.Context())
		if !ok {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusUnauthorized, Detail: "authentication required"})
			return
		}
		var req struct {
			Token string `json:"token"`
		}
		if r.ContentLength != 0 {
			if err := decodeStrict(r, &req); err != nil && !errors.Is(err, io.EOF) {
				writeValidation(w, r, err)
				return
			}
		}
		tok := req.Token
		if tok == "" {
			own, err := g.auth.Token(r)
			if err != nil {
				httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: err.Error()})
				return
			}
			tok = own
		} else {
			owner, err := g.auth.Authenticate(r.Context(), tok)
			if err != nil {
				httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: "token: " + err.Error(),
					Extensions: map[string]any{"parameter": "token"}})
				return
			}
			if owner.Subject != caller.Subject && !caller.IsAdmin() {
				httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusForbidden, Detail: "only an admin may revoke another subject's token"})
				return
			}
		}
		owner, err := g.auth.Revoke(r.Context(), tok)
		if err != nil {
			httpjson.WriteProblem(w, r, httpjson.Problem{Status: http.StatusBadRequest, Detail: fmt.Sprintf("token: %v", err),
				Extensions: map[string]any{"parameter": "token"}})
			return
		}
		g.log.InfoContext(r.Context(), "token revoked", "subject", owner.Subject, "by", caller.Subject)
		w.WriteHeader(http.StatusNoContent)
	})
}
