// Command openloop sends GET requests at a fixed rate (open loop) and prints
// latency percentiles measured from each request's intended send time, so that
// stalls are not hidden (no coordinated omission). It is the fixed-rate half of
// bench/gateway/run.sh; wrk gives the saturation half.
//
//	go run ./bench/gateway/openloop -url http://127.0.0.1:18080/up/x -rate 5000 -duration 20s
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	url := flag.String("url", "", "URL to GET")
	rate := flag.Int("rate", 5000, "requests a second")
	dur := flag.Duration("duration", 20*time.Second, "how long to send")
	warmup := flag.Duration("warmup", 2*time.Second, "send at the rate this long first, not measured")
	conns := flag.Int("conns", 64, "connections (and requests in flight) at most")
	label := flag.String("label", "", "name printed at the start of the result line")
	var hs headers
	flag.Var(&hs, "H", "request header \"Name: value\" (repeatable)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "openloop: -url is required")
		os.Exit(2)
	}
	hdr := http.Header{}
	for _, h := range hs {
		k, v, _ := strings.Cut(h, ":")
		hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	client := &http.Client{Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: *conns, MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns,
		DisableCompression: true,
	}}

	run := func(d time.Duration, record bool) (lat []time.Duration, errs int, elapsed time.Duration) {
		n := int(d.Seconds() * float64(*rate))
		due := make(chan time.Time, n)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range *conns {
			wg.Go(func() {
				var mine []time.Duration
				bad := 0
				req, _ := http.NewRequest(http.MethodGet, *url, nil)
				req.Header = hdr
				for t := range due {
					resp, err := client.Do(req)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					if err != nil {
						bad++
						continue
					}
					if record {
						mine = append(mine, time.Since(t))
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				errs += bad
				mu.Unlock()
			})
		}
		start := time.Now()
		interval := time.Second / time.Duration(*rate)
		for i := 0; i < n; {
			now := time.Now()
			for ; i < n; i++ {
				t := start.Add(time.Duration(i) * interval)
				if t.After(now) {
					break
				}
				due <- t
			}
			time.Sleep(200 * time.Microsecond)
		}
		close(due)
		wg.Wait()
		return lat, errs, time.Since(start)
	}

	if *warmup > 0 {
		run(*warmup, false)
	}
	lat, errs, elapsed := run(*dur, true)
	slices.Sort(lat)
	q := func(p float64) string {
		if len(lat) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3fms", float64(lat[min(len(lat)-1, int(p*float64(len(lat))))])/1e6)
	}
	fmt.Printf("%s offered=%d/s done=%.0f/s errors=%d p50=%s p90=%s p99=%s p99.9=%s max=%s\n",
		*label, *rate, float64(len(lat))/elapsed.Seconds(), errs, q(0.5), q(0.9), q(0.99), q(0.999), q(1))
}
