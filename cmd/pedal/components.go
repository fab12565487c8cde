package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pedal-project/pedal/internal/analytics"
	"github.com/pedal-project/pedal/internal/clicks"
	"github.com/pedal-project/pedal/internal/clicks/query"
	"github.com/pedal-project/pedal/internal/principal"
)

// The roles of pedal serve (--components), as Grafana Loki's -target.
const (
	roleGateway   = "gateway"   // the public HTTP API: routing, auth, limits (without it, local services are served unguarded)
	roleIngest    = "ingest"    // POST /v1/clicks, redirects, click URLs
	roleAggregate = "aggregate" // the stream aggregator
	roleQuery     = "query"     // the query API
	roleMetadata  = "metadata"  // the metadata API and its workers
	roleRelay     = "relay"     // the outbox relay
)

var allRoles = []string{roleGateway, roleIngest, roleAggregate, roleQuery, roleMetadata, roleRelay}

func parseComponents(list string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, c := range strings.Split(list, ",") {
		c = strings.TrimSpace(c)
		switch {
		case c == "":
		case c == "all":
			for _, r := range allRoles {
				out[r] = true
			}
		case slices.Contains(allRoles, c):
			out[c] = true
		default:
			return nil, fmt.Errorf("--components: unknown role %q (want %s, or all)", c, strings.Join(allRoles, ", "))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--components: name at least one role")
	}
	return out, nil
}

func componentList(m map[string]bool) []string {
	var out []string
	for _, r := range allRoles {
		if m[r] {
			out = append(out, r)
		}
	}
	return out
}

// parseRemote reads cluster=URL pairs; a cluster may be named more than once.
func parseRemote(list string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, pair := range strings.Split(list, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		name, raw, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("--remote: %q: want cluster=URL", pair)
		}
		if name != clusterClicks && name != clusterQuery && name != clusterMetadata {
			return nil, fmt.Errorf("--remote: %q: the clusters served by other processes are %s, %s and %s", name, clusterClicks, clusterQuery, clusterMetadata)
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--remote: %s=%q: want an http(s) URL", name, raw)
		}
		out[name] = append(out[name], strings.TrimSuffix(raw, "/"))
	}
	return out, nil
}

// internalMux serves the local services without the gateway.
func internalMux(services map[string]http.Handler) http.Handler {
	mux := http.NewServeMux()
	ops := services[clusterOps]
	mux.Handle("/healthz", ops)
	mux.Handle("/readyz", ops)
	mux.Handle("/metrics", ops)
	for _, c := range []string{clusterClicks, clusterQuery, clusterMetadata} {
		if h := services[c]; h != nil {
			for _, p := range servicePaths[c] {
				mux.Handle(p, callerFromGateway(h))
			}
		}
	}
	return mux
}

// callerFromGateway gives the services the caller a gateway in another
// process authenticated, from the headers only a gateway sets (it removes
// them from clients' requests). This address must stay internal.
func callerFromGateway(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sub := r.Header.Get("X-Pedal-Subject"); sub != "" {
			role := r.Header.Get("X-Pedal-Role")
			if role != principal.RoleAdmin {
				role = principal.RoleUser
			}
			r = r.WithContext(principal.With(r.Context(), principal.Principal{Subject: sub, Role: role}))
		}
		h.ServeHTTP(w, r)
	})
}

// servicePaths are the path prefixes each service answers.
var servicePaths = map[string][]string{
	clusterClicks:   {"/v1/clicks", "/v1/r/", "/v1/ads/{ad_id}/click-urls"},
	clusterQuery:    {"/v1/ads/top", "/v1/ads/{ad_id}/clicks", "/v1/traffic/quality", "/v1/pipeline/status"},
	clusterMetadata: {"/v1/metadata/"},
}

// logPipeline is the query API's view of the aggregation when the
// aggregator runs in another process: positions from the log (the
// aggregator's group), no watermarks (so no bucket is reported final).
type logPipeline struct {
	log   eventLog
	group string
}

func (p logPipeline) Watermark(string) (time.Time, bool) { return time.Time{}, false }

func (p logPipeline) Status(ctx context.Context) (query.Status, error) {
	n, err := p.log.Partitions(ctx, clicks.Topic)
	if err != nil {
		return query.Status{}, err
	}
	st := query.Status{Freshness: -1}
	for part := range n {
		_, end, err := p.log.Offsets(ctx, clicks.Topic, part)
		if err != nil {
			return query.Status{}, err
		}
		committed, err := p.log.CommittedOffset(ctx, p.group, clicks.Topic, part)
		if err != nil {
			return query.Status{}, err
		}
		st.Partitions = append(st.Partitions, query.PartitionStatus{Partition: part, LogEndOffset: end, CommittedOffset: max(committed, 0)})
	}
	return st, nil
}

// dependency is something a role needs, checked by /readyz.
type dependency struct {
	name  string
	check func(ctx context.Context) error
}

// dependencies are what the roles of cfg need: the event log for ingest,
// aggregate, metadata and relay; the SQL store for metadata and relay; the
// analytics store for aggregate and query; Redis for the gateway.
func dependencies(cfg serveConfig, log eventLog, store analytics.Store, md *metadataService, shared *sharedState) []dependency {
	c := cfg.Components
	var deps []dependency
	if c[roleIngest] || c[roleAggregate] || c[roleMetadata] || c[roleRelay] {
		deps = append(deps, dependency{"event log", func(ctx context.Context) error {
			_, err := log.Partitions(ctx, clicks.Topic)
			return err
		}})
	}
	if c[roleMetadata] || c[roleRelay] {
		deps = append(deps, dependency{"sql", func(ctx context.Context) error { return md.store.DB().PingContext(ctx) }})
	}
	if c[roleAggregate] || c[roleQuery] {
		deps = append(deps, dependency{"analytics", func(ctx context.Context) error {
			now := time.Now()
			_, err := store.Top(ctx, "", now.Add(-time.Minute), now, 1)
			return err
		}})
	}
	if p, ok := shared.limiter.(interface{ Ping(context.Context) error }); ok && c[roleGateway] {
		deps = append(deps, dependency{"cache", p.Ping})
	}
	return deps
}

// checkDependencies checks deps at once, each within a second, and returns
// the names of those that failed.
func checkDependencies(ctx context.Context, deps []dependency) []string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	errs := make([]error, len(deps))
	var wg sync.WaitGroup
	for i, d := range deps {
		wg.Go(func() { errs[i] = d.check(ctx) })
	}
	wg.Wait()
	var down []string
	for i, err := range errs {
		if err != nil {
			down = append(down, deps[i].name)
		}
	}
	return down
}

// parsePartitions reads a list of partitions and ranges ("0-7,12") of a topic
// with n partitions; empty means all (nil).
func parsePartitions(list string, n int32) ([]int32, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	seen := map[int32]bool{}
	var out []int32
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		a, err1 := strconv.ParseInt(strings.TrimSpace(lo), 10, 32)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.ParseInt(strings.TrimSpace(hi), 10, 32)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b >= int64(n) {
			return nil, fmt.Errorf("--aggregate-partitions: %q: want partitions or ranges within 0-%d, like 0-7,12", item, n-1)
		}
		for p := int32(a); p <= int32(b); p++ {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}
