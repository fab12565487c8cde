package collect

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pedal-project/pedal/internal/metadata/collect/collecttest"
)

// peersDir holds the 63 cases collected from six peer projects' test suites
// (see its README.md and internal/metadata/extract/peers_test.go). It lives
// beside the repository, not in it.
const peersDir = "../../../../shared/testdata/metadata-peers"

// benchWorkers is the number of concurrent Collect calls, the same as
// bench/metascraper/bench.mjs uses for metascraper.
const benchWorkers = 16

type benchResource struct {
	contentType string
	body        []byte
}

// loadPeerCorpus reads every case of the corpus into memory: one page per
// case (plus its other resources, such as an oEmbed endpoint), each case
// under a host of its own (c00.peers.example, …) mapped to a public fake
// address, at the path of its request URL. It returns the page URLs and
// the resources by "host/path".
func loadPeerCorpus(b *testing.B) (pages []string, res map[string]benchResource, pageBytes int64) {
	var index []struct {
		ID string `json:"id"`
	}
	raw, err := os.ReadFile(filepath.Join(peersDir, "index.json"))
	if err != nil {
		b.Skipf("peer fixtures not found at %s (they live beside the repository, not in it): %v", peersDir, err)
	}
	if err := json.Unmarshal(raw, &index); err != nil {
		b.Fatal(err)
	}
	res = map[string]benchResource{}
	for i, row := range index {
		dir := filepath.Join(peersDir, filepath.FromSlash(row.ID))
		var pc struct {
			RequestURL *string `json:"request_url"`
			Serve      struct {
				ContentType string `json:"content_type"`
				BodyFile    string `json:"body_file"`
				Resources   []struct {
					Path        string `json:"path"`
					ContentType string `json:"content_type"`
					File        string `json:"file"`
				} `json:"resources"`
			} `json:"serve"`
		}
		raw, err := os.ReadFile(filepath.Join(dir, "case.json"))
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(raw, &pc); err != nil {
			b.Fatalf("%s: %v", row.ID, err)
		}
		host := fmt.Sprintf("c%02d.peers.example", i)
		path := "/page"
		if pc.RequestURL != nil {
			u, err := url.Parse(*pc.RequestURL)
			if err != nil {
				b.Fatalf("%s: %v", row.ID, err)
			}
			if u.Path != "" {
				path = u.Path
			} else {
				path = "/"
			}
		}
		read := func(file string) []byte {
			body, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				b.Fatal(err)
			}
			return body
		}
		if len(pc.Serve.Resources) == 0 {
			res[host+path] = benchResource{pc.Serve.ContentType, read(pc.Serve.BodyFile)}
		}
		for _, r := range pc.Serve.Resources {
			res[host+r.Path] = benchResource{r.ContentType, read(r.File)}
		}
		page, ok := res[host+path]
		if !ok {
			b.Fatalf("%s: no resource at the request URL's path %s", row.ID, path)
		}
		pageBytes += int64(len(page.body))
		pages = append(pages, "http://"+host+path)
	}
	return pages, res, pageBytes
}

// BenchmarkCollectPeers collects the pages of the peer corpus from an
// in-process server over loopback TCP, benchWorkers at a time, with the
// cache off so that every page is fetched and extracted. Pages are read
// whole (MaxDepthBytes 2 MiB; the largest page is 1.4 MB), after one pass
// over the pages to warm up. With images, the collector also probes up to 4
// images a page: those on the corpus hosts answer 404, the others fail at the
// (fake) name lookup.
//
//	go test -run '^$' -bench BenchmarkCollectPeers -benchtime 3000x -cpu 2 ./internal/metadata/collect/
func BenchmarkCollectPeers(b *testing.B) {
	pages, res, pageBytes := loadPeerCorpus(b)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs, ok := res[r.Host+r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if rs.contentType != "" {
			w.Header().Set("Content-Type", rs.contentType)
		}
		w.Write(rs.body)
	})
	b.Logf("%d pages, %.1f MB", len(pages), float64(pageBytes)/1e6)
	fn := collecttest.New(b, handler)
	for i := range pages {
		fn.Map(fmt.Sprintf("c%02d.peers.example", i), fmt.Sprintf("93.184.216.%d", 10+i))
	}
	for _, images := range []bool{false, true} {
		b.Run(fmt.Sprintf("images=%t", images), func(b *testing.B) {
			cfg := Config{CacheTTL: -1, Retries: -1, Timeout: time.Minute, BreakerMinCalls: 1 << 30}
			fn.Use(&cfg.Fetch)
			c := New(cfg, nil, nil)
			defer c.client.CloseIdleConnections()
			opt := Options{IncludeImages: images, MaxDepthBytes: 2 << 20}

			// Warm up as bench.mjs does: one pass over the pages, which
			// also opens the connections to the 63 hosts.
			for _, u := range pages {
				if _, err := c.Collect(b.Context(), u, opt, nil); err != nil {
					b.Fatalf("%s: %v", u, err)
				}
			}
			var next, failed, bytes atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range benchWorkers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						u := pages[i%int64(len(pages))]
						out, err := c.Collect(b.Context(), u, opt, nil)
						if err != nil {
							if failed.Add(1) <= 3 {
								b.Errorf("%s: %v", u, err)
							}
							continue
						}
						bytes.Add(out.Result.BytesRead)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/secs, "pages/s")
			b.ReportMetric(float64(bytes.Load())/secs/1e6, "MB/s")
			if n := failed.Load(); n > 0 {
				b.Errorf("%d of %d collections failed", n, b.N)
			}
		})
	}
}
