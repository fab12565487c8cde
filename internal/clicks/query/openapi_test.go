package query

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/pedal-project/pedal/internal/analytics"
)

// The contract, in the repository's api directory.
const specFile = "../../../api/openapi.yaml"

func loadValidator(t *testing.T) validator.Validator {
	t.Helper()
	raw, err := os.ReadFile(specFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatalf("parse %s: %v", specFile, err)
	}
	v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
	if len(errs) > 0 {
		t.Fatalf("new validator: %v", errs)
	}
	return v
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

// TestAnswersMatchOpenAPI sends requests to the real handlers and checks their
// answers, of every status, against the OpenAPI document; and that every
// request the handlers accept is valid by the document too.
func TestAnswersMatchOpenAPI(t *testing.T) {
	v := loadValidator(t)
	failing := func(f *fixture) {
		f.store.err = errors.New("disk on fire")
		f.pipe.err = errors.New("disk on fire")
	}
	tests := []struct {
		target string
		setup  func(*fixture)
		status int
	}{
		{"/v1/ads/ad-1001/clicks", seed, 200},
		{"/v1/ads/ad-1001/clicks", nil, 200},
		{"/v1/ads/ad-1001/clicks?from=2026-11-29T10:00:00%2B01:00&to=2026-11-30T14:00:00Z&granularity=1h&country=de", seed, 200},
		{"/v1/ads/ad-1001/clicks?from=2000-01-01T00:00:00Z&to=2027-05-19T00:00:00Z&granularity=1d", func(f *fixture) {
			f.pipe.wm["ad-1001"] = now
			for i := range maxPoints {
				f.store.points = append(f.store.points, analytics.Point{Start: time.Date(2000, 1, 1+i, 0, 0, 0, 0, time.UTC), Clicks: 1})
			}
		}, 200},
		{"/v1/ads/ad-1001/clicks?to=2026-11-30T12:00:00.123Z", seed, 200},
		{"/v1/ads/ad-1001/clicks?from=yesterday", nil, 400},
		{"/v1/ads/ad-1001/clicks?granularity=1w", nil, 400},
		{"/v1/ads/ad-1001/clicks?nope=1", nil, 400},
		{"/v1/ads/ad-1001/clicks?from=%zz", nil, 400},
		{"/v1/ads/ad-1001/clicks", failing, 500},

		{"/v1/ads/top", seed, 200},
		{"/v1/ads/top", nil, 200},
		{"/v1/ads/top?window=90s&limit=1000&country=US", seed, 200},
		{"/v1/ads/top?from=2026-11-30T10:00:00Z&to=2026-11-30T12:00:00Z&limit=1", seed, 200},
		{"/v1/ads/top?limit=0", nil, 400},
		{"/v1/ads/top?window=5m&from=2026-11-30T10:00:00Z", nil, 400},
		{"/v1/ads/top", failing, 500},

		{"/v1/traffic/quality", seed, 200},
		{"/v1/traffic/quality", nil, 200},
		{"/v1/traffic/quality?ad_id=ad-1001&from=2026-11-30T10:00:00Z", seed, 200},
		{"/v1/traffic/quality?ad_id=a%2Fb", nil, 400},
		{"/v1/traffic/quality", failing, 500},

		{"/v1/pipeline/status", seed, 200},
		{"/v1/pipeline/status", func(f *fixture) { f.pipe.status = Status{Freshness: -1} }, 200},
		{"/v1/pipeline/status", func(f *fixture) {
			f.pipe.status = Status{Partitions: []PartitionStatus{{Partition: 0}}, Freshness: -1}
		}, 200},
		{"/v1/pipeline/status?x=1", nil, 400},
		{"/v1/pipeline/status", failing, 500},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.status, tt.target), func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			url := "http://127.0.0.1:8080" + tt.target // the document's server
			w := f.serve(httptest.NewRequest(http.MethodGet, url, nil))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			resp := w.Result()
			req := httptest.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer t") // the gateway's concern; the document requires one
			resp.Request = req
			if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
				t.Errorf("the answer does not match the document:%s\n  body: %.2000s", errText(errs), w.Body)
			}
			if tt.status == http.StatusOK {
				vr := httptest.NewRequest(http.MethodGet, url, nil)
				vr.Header.Set("Authorization", "Bearer t")
				if ok, errs := v.ValidateHttpRequestSync(vr); !ok {
					t.Errorf("the handler accepts a request the document refuses:%s", errText(errs))
				}
			}
		})
	}
}
