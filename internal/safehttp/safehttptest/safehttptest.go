// Package safehttptest holds what tests of safehttp's users share: a
// Resolver with fixed, possibly successive answers (to stand a test server
// in for public names, or to rebind a name between lookups), and the shared
// SSRF corpus (shared/testdata/ssrf-corpus-public.json), read the same way by
// every test that replays it. A Resolver is safe for concurrent use.
package safehttptest

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
)

// Resolver is a safehttp.Resolver with fixed answers.
type Resolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr // successive answers per host; the last one repeats
	lookups map[string]int
}

// NewResolver returns a Resolver that knows no name.
func NewResolver() *Resolver {
	return &Resolver{answers: map[string][][]netip.Addr{}, lookups: map[string]int{}}
}

// Set gives host's successive answers: the first lookup gets the first list,
// and so on, the last list repeating.
func (r *Resolver) Set(host string, answers ...[]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers[host] = nil
	for _, as := range answers {
		var addrs []netip.Addr
		for _, a := range as {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		r.answers[host] = append(r.answers[host], addrs)
	}
}

// Reset forgets every name and every lookup counted.
func (r *Resolver) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers, r.lookups = map[string][][]netip.Addr{}, map[string]int{}
}

// LookupNetIP answers with host's next answer, or "no such host".
func (r *Resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	as, ok := r.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	i := min(r.lookups[host], len(as)-1)
	r.lookups[host]++
	return slices.Clone(as[i]), nil
}

// Count returns how many times host was looked up.
func (r *Resolver) Count(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lookups[host]
}

// CorpusPath is the shared SSRF corpus, which lives beside the repository,
// as seen from a package two levels down (internal/x).
const CorpusPath = "../../../shared/testdata/ssrf-corpus-public.json"

// CorpusPublic are the corpus's public addresses: the only ones tests route,
// on ports 80 and 443, to their servers.
var CorpusPublic = []string{"93.184.215.14", "172.15.255.255"}

// Case is one case of the corpus; see shared/testdata/README.md.
type Case struct {
	ID       string                     `json:"id"`
	Category string                     `json:"category"`
	Input    string                     `json:"input"`
	DNS      map[string]json.RawMessage `json:"dns"` // host: ["ip", ...], or [["ip"], ["ip"]] for successive answers
	Server   *struct {
		Status   int    `json:"status"`
		Location string `json:"location"`
	} `json:"server"`
	Expected string `json:"expected"`
	Why      string `json:"why"`
}

// LoadCorpus reads the corpus, or skips the test when it is absent (CI
// clones only the repository).
func LoadCorpus(t testing.TB) []Case {
	t.Helper()
	data, err := os.ReadFile(CorpusPath)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not found: the corpus lives beside the repository", CorpusPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	var cases []Case
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatalf("%s: %v", CorpusPath, err)
	}
	if len(cases) == 0 {
		t.Fatalf("%s holds no case", CorpusPath)
	}
	return cases
}

// SetDNS gives r the case's answers.
func (c Case) SetDNS(t testing.TB, r *Resolver) {
	t.Helper()
	for host, raw := range c.DNS {
		var successive [][]string
		if err := json.Unmarshal(raw, &successive); err == nil {
			r.Set(host, successive...)
			continue
		}
		var answers []string
		if err := json.Unmarshal(raw, &answers); err != nil {
			t.Fatalf("case %s: dns %s: %v", c.ID, host, err)
		}
		r.Set(host, answers)
	}
}
