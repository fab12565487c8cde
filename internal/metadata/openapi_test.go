package metadata

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/pedal-project/pedal/internal/metadata/collect"
)

// The contract, in the repository's api directory.
const specFile = "../../api/openapi.yaml"

// TestAnswersMatchOpenAPI sends requests of every documented outcome to the
// real handlers and checks both requests and answers against the document.
func TestAnswersMatchOpenAPI(t *testing.T) {
	raw, err := os.ReadFile(specFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("news.example/ok", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `<html lang="en"><head><title>ok</title><meta property="og:image" content="/i.png"></head></html>`)
	})
	s := newService(t, mux, WorkerConfig{}, collect.Config{})
	ok := s.submit("http://news.example/ok", `{"include_images": true}`, nil).body["task_id"].(string)
	s.wait(ok)
	failed := s.submit("http://internal.example/", "", nil).body["task_id"].(string)
	s.wait(failed)
	s.submit("http://news.example/ok", "", map[string]string{"Idempotency-Key": "k1"})

	type call struct {
		method, path, body string
		header             map[string]string
		status             int
	}
	calls := []call{
		{"POST", "/v1/metadata/collect", `{"target_url": "http://news.example/a", "requested_by": "x"}`, nil, 202},
		{"POST", "/v1/metadata/collect", `{"target_url": "http://news.example/ok", "requested_by": "tester"}`, map[string]string{"Idempotency-Key": "k1"}, 202},
		{"POST", "/v1/metadata/collect", `{"target_url": "http://news.example/b", "requested_by": "tester"}`, map[string]string{"Idempotency-Key": "k1"}, 422},
		{"POST", "/v1/metadata/collect", `{"target_url": "http://127.0.0.1/", "requested_by": "x"}`, nil, 400},
		{"POST", "/v1/metadata/collect", `{"target_url": "http://news.example/", "requested_by": "x", "extraction_options": {"max_depth_bytes": 10}}`, nil, 400},
		{"POST", "/v1/metadata/collect", `{"target_url": "http://news.example/", "requested_by": "` + strings.Repeat("x", 17<<10) + `"}`, nil, 413},
		{"POST", "/v1/metadata/collect", `{}`, map[string]string{"Content-Type": "text/plain"}, 415},
		{"GET", "/v1/metadata/tasks/" + ok, "", nil, 200},
		{"GET", "/v1/metadata/tasks/" + failed, "", nil, 200},
		{"GET", "/v1/metadata/tasks/tsk_01KBCDEFGHJKMNPQRSTVWXYZ09", "", nil, 404},
	}
	check := func(c call) {
		t.Run(fmt.Sprintf("%d %s %s", c.status, c.method, c.path), func(t *testing.T) {
			url := "http://127.0.0.1:8080" + c.path // the document's server
			req, _ := http.NewRequest(c.method, s.api.URL+c.path, strings.NewReader(c.body))
			vreq, _ := http.NewRequest(c.method, url, strings.NewReader(c.body))
			vreq.Header.Set("Authorization", "Bearer t") // the gateway's concern; the document requires one
			for _, r := range []*http.Request{req, vreq} {
				if c.body != "" {
					r.Header.Set("Content-Type", "application/json")
				}
				for k, v := range c.header {
					r.Header.Set(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != c.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			if c.status < 300 {
				if ok, errs := v.ValidateHttpRequest(vreq); !ok {
					t.Errorf("an accepted request is invalid by the document:%s", errText(errs))
				}
				vreq, _ = http.NewRequest(c.method, url, strings.NewReader(c.body))
				vreq.Header = req.Header.Clone()
				vreq.Header.Set("Authorization", "Bearer t")
			}
			resp.Request = vreq
			if ok, errs := v.ValidateHttpResponse(vreq, resp); !ok {
				t.Errorf("the answer does not match the document:%s", errText(errs))
			}
		})
	}
	for _, c := range calls {
		check(c)
	}
	// A store that fails: 503 for both endpoints.
	s.stop()
	s.store.Close()
	check(call{"POST", "/v1/metadata/collect", `{"target_url": "http://news.example/c", "requested_by": "x"}`, nil, 503})
	check(call{"GET", "/v1/metadata/tasks/" + ok, "", nil, 503})
}

func errText(errs []*liberrors.ValidationError) string {
	var sb strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&sb, "\n  - %s: %s", e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			fmt.Fprintf(&sb, "\n      %s (at %s, keyword %s)", se.Reason, se.FieldPath, se.KeywordLocation)
		}
	}
	return sb.String()
}
