package ratelimit

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSetHeaders(t *testing.T) {
	lim := Limit{Rate: 100, Period: time.Minute, Burst: 20}
	tests := []struct {
		name   string
		policy string
		res    Result
		want   http.Header
	}{{
		name:   "allowed",
		policy: "default",
		res:    Result{Allowed: true, Limit: lim, Remaining: 19, RetryAfter: -1, ResetAfter: 600 * time.Millisecond},
		want: http.Header{
			"Ratelimit-Policy": {`"default";q=100;w=60`},
			"Ratelimit":        {`"default";r=19;t=1`},
		},
	}, {
		name:   "refused, durations rounded up",
		policy: "route-7",
		res:    Result{Allowed: false, Limit: lim, RetryAfter: 2*time.Second + 1, ResetAfter: 12 * time.Second},
		want: http.Header{
			"Ratelimit-Policy": {`"route-7";q=100;w=60`},
			"Ratelimit":        {`"route-7";r=0;t=12`},
			"Retry-After":      {"3"},
		},
	}, {
		name:   "refused, Retry-After at least 1",
		policy: "p",
		res:    Result{Allowed: false, Limit: PerSecond(10), RetryAfter: time.Nanosecond, ResetAfter: time.Second},
		want: http.Header{
			"Ratelimit-Policy": {`"p";q=10;w=1`},
			"Ratelimit":        {`"p";r=0;t=1`},
			"Retry-After":      {"1"},
		},
	}, {
		name:   "sub-second period, full bucket",
		policy: "p",
		res:    Result{Allowed: true, Limit: Limit{Rate: 5, Period: 500 * time.Millisecond, Burst: 5}, Remaining: 4, RetryAfter: -1},
		want: http.Header{
			"Ratelimit-Policy": {`"p";q=5;w=1`},
			"Ratelimit":        {`"p";r=4;t=0`},
		},
	}, {
		name:   "policy name escaped",
		policy: "a\"b\\c\né",
		res:    Result{Allowed: true, Limit: PerHour(1), RetryAfter: -1, ResetAfter: time.Hour},
		want: http.Header{
			"Ratelimit-Policy": {`"a\"b\\c___";q=1;w=3600`},
			"Ratelimit":        {`"a\"b\\c___";r=0;t=3600`},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := http.Header{}
			SetHeaders(got, tt.policy, tt.res)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("SetHeaders mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetHeadersSeveralPolicies(t *testing.T) {
	h := http.Header{}
	SetHeaders(h, "route", Result{Allowed: false, Limit: PerMinute(60), RetryAfter: 5 * time.Second, ResetAfter: 30 * time.Second})
	SetHeaders(h, "client", Result{Allowed: false, Limit: PerHour(1000), RetryAfter: 3 * time.Second, ResetAfter: time.Hour})
	SetHeaders(h, "global", Result{Allowed: true, Limit: PerSecond(1000), Remaining: 999, RetryAfter: -1, ResetAfter: time.Millisecond})
	want := http.Header{
		"Ratelimit-Policy": {`"route";q=60;w=60`, `"client";q=1000;w=3600`, `"global";q=1000;w=1`},
		"Ratelimit":        {`"route";r=0;t=30`, `"client";r=0;t=3600`, `"global";r=999;t=1`},
		"Retry-After":      {"5"}, // the longest wait
	}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

// TestSetHeadersFromLocal checks that a client obeying Retry-After is admitted.
func TestSetHeadersFromLocal(t *testing.T) {
	l, c := newLocal(Config{})
	lim := Limit{Rate: 2, Period: 3 * time.Second, Burst: 1} // one per 1.5s
	allow(t, l, "k", lim)
	c.Advance(100 * time.Millisecond)
	h := http.Header{}
	SetHeaders(h, "p", allow(t, l, "k", lim))
	if got, want := h.Get("Retry-After"), "2"; got != want { // 1.4s rounded up
		t.Fatalf("Retry-After = %q, want %q", got, want)
	}
	c.Advance(2 * time.Second)
	if !allow(t, l, "k", lim).Allowed {
		t.Fatal("refused after waiting Retry-After")
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		subject, addr string
		want          string
	}{
		{"user-1", "192.0.2.1", "r1\x00s:user-1"},
		{"", "192.0.2.1", "r1\x00a:192.0.2.1"},
		{"", "::ffff:192.0.2.1", "r1\x00a:192.0.2.1"},
		{"", "2001:db8:1:2:3:4:5:6", "r1\x00n:2001:db8:1:2::/64"},
		{"", "2001:db8:1:2:ffff::1", "r1\x00n:2001:db8:1:2::/64"},
		{"", "fe80::1%eth0", "r1\x00n:fe80::/64"},
		{"", "", "r1\x00-"},
	}
	for _, tt := range tests {
		var addr netip.Addr
		if tt.addr != "" {
			addr = netip.MustParseAddr(tt.addr)
		}
		if got := Key("r1", tt.subject, addr); got != tt.want {
			t.Errorf("Key(r1, %q, %s) = %q, want %q", tt.subject, tt.addr, got, tt.want)
		}
	}
}
