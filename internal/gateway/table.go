package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pedal-project/pedal/internal/gateway/routedb"
)

// table is one immutable routing snapshot: a net/http ServeMux holding every
// active route's pattern (so the most specific pattern wins, as in net/http),
// built from one version of the configuration.
type table struct {
	version  int64
	mux      *http.ServeMux
	routes   map[string]*route // active routes by id
	clusters map[string]routedb.Cluster
}

// route is an active route in a table.
type route struct {
	routedb.Route
	cluster  *cluster
	inflight *atomic.Int64 // the route's bulkhead, kept across tables
}

// routeHandler is what a table's mux holds for a route; the gateway serves it.
type routeHandler struct{ rt *route }

func (routeHandler) ServeHTTP(http.ResponseWriter, *http.Request) {} // never called: the gateway dispatches

// ValidationError is a configuration refused before it reaches the store:
// Conflict for a pattern that overlaps another active route's ambiguously or
// repeats it, otherwise an invalid value. Field names the member at fault.
type ValidationError struct {
	Field    string
	Conflict bool
	Msg      string
	Err      error // the cause, when there is one
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap returns the underlying error, if any.
func (e *ValidationError) Unwrap() error { return e.Err }

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// validateRoute checks a route's values against the seed's constraints and
// the policy columns', as the database would, and more: the pattern must be a
// net/http pattern and the cluster must exist.
func validateRoute(r routedb.Route, clusters map[string]routedb.Cluster, inproc map[string]http.Handler) error {
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case !idPattern.MatchString(r.ID):
		return bad("route_id", "%q: want 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", r.ID)
	case r.PathPattern == "" || len(r.PathPattern) > 512:
		return bad("path_pattern", "want 1 to 512 bytes")
	case r.MaxConcurrency < 10 || r.MaxConcurrency > 100000:
		return bad("max_concurrency", "%d: want 10 to 100000", r.MaxConcurrency)
	case r.Auth != routedb.AuthPublic && r.Auth != routedb.AuthAuthenticated && r.Auth != routedb.AuthAdmin:
		return bad("auth", "%q: want public, authenticated or admin", r.Auth)
	case r.Timeout < time.Millisecond || r.Timeout > time.Hour:
		return bad("timeout_ms", "%d: want 1 to 3600000", r.Timeout.Milliseconds())
	case r.RateLimitPerMinute < 0 || r.RateLimitBurst < 0:
		return bad("rate_limit_per_minute", "want 0 (none) or more, and a burst of 0 (the rate) or more")
	}
	if err := checkPattern(r.PathPattern); err != nil {
		return bad("path_pattern", "%q: %v", r.PathPattern, err)
	}
	c, ok := clusters[r.TargetCluster]
	if !ok {
		return bad("target_cluster", "%q: no such cluster", r.TargetCluster)
	}
	if r.TargetCluster == ClusterAdmin && r.Auth != routedb.AuthAdmin {
		return bad("auth", "routes to the admin cluster must be admin-only")
	}
	if c.Kind == routedb.KindInProcess && inproc[c.Name] == nil {
		return bad("target_cluster", "%q: an in-process cluster this binary does not serve", r.TargetCluster)
	}
	return nil
}

// checkPattern reports whether p is a valid net/http pattern.
func checkPattern(p string) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%v", v)
		}
	}()
	http.NewServeMux().Handle(p, http.NotFoundHandler())
	return nil
}

// validateCluster checks a cluster's values.
func validateCluster(c routedb.Cluster, inproc map[string]http.Handler) error {
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case !idPattern.MatchString(c.Name):
		return bad("cluster", "%q: want 1 to 64 of a-z, 0-9, '.', '_', '-'", c.Name)
	case c.Kind != routedb.KindInProcess && c.Kind != routedb.KindHTTP:
		return bad("kind", "%q: want in_process or http", c.Kind)
	case c.Balancing != routedb.RoundRobin && c.Balancing != routedb.LeastRequests:
		return bad("balancing", "%q: want round_robin or least_requests", c.Balancing)
	case c.MaxConcurrency < 1 || c.MaxConcurrency > 100000:
		return bad("max_concurrency", "%d: want 1 to 100000", c.MaxConcurrency)
	case c.HealthPath != "" && !strings.HasPrefix(c.HealthPath, "/"):
		return bad("health_path", "%q: want an absolute path", c.HealthPath)
	case c.Kind == routedb.KindInProcess && inproc[c.Name] == nil:
		return bad("cluster", "%q: this binary serves no such in-process cluster", c.Name)
	case c.Kind == routedb.KindInProcess && len(c.Endpoints) > 0:
		return bad("endpoints", "an in-process cluster has no endpoints")
	case c.Kind == routedb.KindHTTP && len(c.Endpoints) == 0:
		return bad("endpoints", "an http cluster needs at least one endpoint")
	}
	for _, e := range c.Endpoints {
		if _, err := parseEndpoint(e); err != nil {
			return bad("endpoints", "%q: %v", e, err)
		}
	}
	return nil
}

// parseEndpoint checks an endpoint base URL: http or https, a host, no
// userinfo, query or fragment.
func parseEndpoint(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, err
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("want an http or https URL")
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("want scheme://host[:port][/base-path] only")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// buildTable validates a whole configuration and builds its table, taking
// cluster state (breakers, endpoints, counters) from clusterFor. An error
// names the route or cluster at fault.
func buildTable(cfg routedb.Config, inproc map[string]http.Handler, clusterFor func(routedb.Cluster) (*cluster, error),
	counterFor func(routeID string) *atomic.Int64) (*table, error) {
	t := &table{version: cfg.Version, mux: http.NewServeMux(), routes: map[string]*route{},
		clusters: map[string]routedb.Cluster{}}
	for _, c := range cfg.Clusters {
		if err := validateCluster(c, inproc); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		t.clusters[c.Name] = c
	}
	for _, r := range cfg.Routes {
		if !r.IsActive {
			continue
		}
		if err := validateRoute(r, t.clusters, inproc); err != nil {
			return nil, fmt.Errorf("route %s: %w", r.ID, err)
		}
		cl, err := clusterFor(t.clusters[r.TargetCluster])
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", r.ID, err)
		}
		rt := &route{Route: r, cluster: cl, inflight: counterFor(r.ID)}
		if err := register(t.mux, r.PathPattern, routeHandler{rt}); err != nil {
			return nil, fmt.Errorf("route %s: %w", r.ID, &ValidationError{Field: "path_pattern", Conflict: true, Msg: err.Error()})
		}
		t.routes[r.ID] = rt
	}
	return t, nil
}

func register(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%v", v)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}
