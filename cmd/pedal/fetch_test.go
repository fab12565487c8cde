package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pedal-project/pedal/internal/safehttp"
)

// TestFetchConfig: the --fetch-* flags reach the outbound policy, refusals are
// counted by reason, and --fetch-dns-server receives the lookups.
func TestFetchConfig(t *testing.T) {
	dns, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	cfg, err := parseServeConfig([]string{"--fetch-allowed-ports", "80, 8080", "--fetch-allow-cidr", "10.1.0.0/16",
		"--fetch-deny-cidr", "93.184.0.0/16,8.8.8.8", "--fetch-dns-server", dns.LocalAddr().String()}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Fetch.AllowedPorts; len(got) != 2 || got[0] != 80 || got[1] != 8080 {
		t.Errorf("allowed ports %v", got)
	}
	if got := cfg.Fetch.DenyCIDRs; len(got) != 2 || got[1] != netip.MustParsePrefix("8.8.8.8/32") {
		t.Errorf("deny CIDRs %v", got)
	}
	reg := prometheus.NewRegistry()
	var logs strings.Builder
	fc := fetchConfig(cfg, slog.New(slog.NewJSONHandler(&logs, nil)), reg)

	// A refusal by policy: counted by reason, logged with it.
	client := safehttp.NewClient(fc)
	_, err = client.Get("http://127.0.0.1:8080/")
	if !errors.Is(err, safehttp.ErrBlocked) {
		t.Fatalf("GET a loopback URL: %v, want ErrBlocked", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "pedal_fetch_blocked_total" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "loopback" && m.GetCounter().GetValue() == 1 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("pedal_fetch_blocked_total{reason=\"loopback\"} is not 1: %v", mfs)
	}
	if !strings.Contains(logs.String(), `"reason":"loopback"`) {
		t.Errorf("no log line with the reason: %s", logs.String())
	}

	// The lookups of a name go to --fetch-dns-server.
	got := make(chan struct{}, 1)
	served := make(chan struct{})
	go func() {
		defer close(served)
		buf := make([]byte, 512)
		for {
			n, from, err := dns.ReadFrom(buf)
			if err != nil {
				return
			}
			if n <= 12 {
				continue
			}
			select {
			case got <- struct{}{}:
			default:
			}
			// Answer NXDOMAIN: the query with QR set and RCODE 3.
			buf[2] |= 0x80
			buf[3] = buf[3]&0xf0 | 3
			dns.WriteTo(buf[:n], from)
		}
	}()
	defer func() { dns.Close(); <-served }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://pedal-test.invalid/", nil)
	if _, err := safehttp.NewClient(fc).Do(req); err == nil {
		t.Error("a name the DNS server does not know was fetched")
	}
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Error("--fetch-dns-server received no query")
	}
}
