package gateway

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pedal-project/pedal/internal/breaker"
	"github.com/pedal-project/pedal/internal/gateway/routedb"
)

// cluster is the live state of a target cluster, kept across routing tables
// so that a configuration change resets neither its breaker nor its counts.
type cluster struct {
	name     string
	breaker  *breaker.Breaker
	inflight atomic.Int64

	mu      sync.Mutex // guards the fields below, replaced on a configuration change
	cfg     routedb.Cluster
	handler http.Handler // in-process
	eps     []*endpoint  // http
	next    atomic.Uint64
}

// endpoint is one upstream of an http cluster.
type endpoint struct {
	raw      string
	base     *url.URL
	inflight atomic.Int64
	down     atomic.Bool // failed its last two health checks
	fails    atomic.Int32
}

// update applies a (validated) cluster configuration, keeping the state of
// endpoints that stay.
func (c *cluster) update(cfg routedb.Cluster, inproc map[string]http.Handler) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := map[string]*endpoint{}
	for _, e := range c.eps {
		old[e.raw] = e
	}
	var eps []*endpoint
	for _, raw := range cfg.Endpoints {
		if e, ok := old[raw]; ok {
			eps = append(eps, e)
			continue
		}
		u, err := parseEndpoint(raw)
		if err != nil {
			return err
		}
		eps = append(eps, &endpoint{raw: raw, base: u})
	}
	c.cfg, c.eps, c.handler = cfg, eps, inproc[cfg.Name]
	return nil
}

func (c *cluster) snapshot() (routedb.Cluster, http.Handler, []*endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg, c.handler, c.eps
}

// pick chooses an endpoint among the healthy ones (all of them when none is
// healthy, rather than none): round robin, or the less loaded of two drawn
// at random (least requests, as Envoy does by default). It returns nil when
// the cluster has no endpoint.
func (c *cluster) pick() *endpoint {
	cfg, _, eps := c.snapshot()
	healthy := make([]*endpoint, 0, len(eps))
	for _, e := range eps {
		if !e.down.Load() {
			healthy = append(healthy, e)
		}
	}
	if len(healthy) == 0 {
		healthy = eps
	}
	switch n := len(healthy); {
	case n == 0:
		return nil
	case n == 1:
		return healthy[0]
	case cfg.Balancing == routedb.LeastRequests:
		a, b := healthy[rand.N(n)], healthy[rand.N(n)]
		if b.inflight.Load() < a.inflight.Load() {
			return b
		}
		return a
	default:
		return healthy[int(c.next.Add(1)-1)%n]
	}
}

// checkHealth probes every endpoint of an http cluster with a health path
// once: two failures in a row take an endpoint out of balancing, one success
// brings it back.
func (c *cluster) checkHealth(ctx context.Context, rt http.RoundTripper, timeout time.Duration) {
	cfg, _, eps := c.snapshot()
	if cfg.Kind != routedb.KindHTTP || cfg.HealthPath == "" {
		return
	}
	var wg sync.WaitGroup
	for _, e := range eps {
		wg.Go(func() {
			ok := probe(ctx, rt, e.base.JoinPath(cfg.HealthPath).String(), timeout)
			if ok {
				e.fails.Store(0)
				e.down.Store(false)
			} else if e.fails.Add(1) >= 2 {
				e.down.Store(true)
			}
		})
	}
	wg.Wait()
}

func probe(ctx context.Context, rt http.RoundTripper, u string, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "pedal-gateway-health/1")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}
