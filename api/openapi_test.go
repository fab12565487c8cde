package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/pb33f/go-yaml"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi-validator/content"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/pb33f/libopenapi/orderedmap"
)

const (
	specFile  = "openapi.yaml"
	mediaJSON = "application/json"
	mediaND   = "application/x-ndjson"
	mediaProb = "application/problem+json"
	mediaText = "text/plain"
)

// spec is the parsed document, built once per test.
type spec struct {
	doc   libopenapi.Document
	model *v3.Document
	v     validator.Validator
}

func loadSpec(t *testing.T) *spec {
	t.Helper()
	raw, err := os.ReadFile(specFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatalf("parse %s: %v", specFile, err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("build OpenAPI 3 model: %v", err)
	}
	v, errs := validator.NewValidator(doc,
		config.WithFormatAssertions(),
		config.WithStandardBodyDecoders(),
		config.WithBodyDecoder(mediaND, content.DecoderFunc(decodeNDJSONBody)),
		config.WithRejectUnsupportedBodyContent(),
	)
	if len(errs) > 0 {
		t.Fatalf("new validator: %v", errs)
	}
	return &spec{doc: doc, model: &m.Model, v: v}
}

// decodeNDJSONBody turns an NDJSON body into the array the ClickStream schema
// describes: one element per non-blank line, as the server reads it.
func decodeNDJSONBody(in *content.DecodeInput) (any, error) {
	b, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	return parseNDJSON(string(b))
}

func parseNDJSON(s string) ([]any, error) {
	out := []any{}
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		d := json.NewDecoder(strings.NewReader(line))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if d.More() {
			return nil, fmt.Errorf("line %d: more than one JSON value", i+1)
		}
		out = append(out, v)
	}
	return out, nil
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

func TestDocumentIsValidOpenAPI31(t *testing.T) {
	s := loadSpec(t)
	info := s.doc.GetSpecInfo()
	if !strings.HasPrefix(info.Version, "3.1.") {
		t.Fatalf("openapi version = %q, want 3.1.x", info.Version)
	}
	if ok, errs := s.v.ValidateDocument(); !ok {
		t.Fatalf("%s is not a valid OpenAPI 3.1 document:%s", specFile, errText(errs))
	}
	if len(s.model.Servers) != 1 || s.model.Servers[0].URL != "http://127.0.0.1:8080" {
		t.Errorf("servers = %+v, want exactly http://127.0.0.1:8080", s.model.Servers)
	}
	if s.model.Info == nil || s.model.Info.Title == "" || s.model.Info.Version == "" || s.model.Info.Description == "" {
		t.Errorf("info needs a title, a version and a description")
	}
}

// operations is the contract: every operation and its documented status codes.
var operations = map[string]map[string][]string{
	"/v1/clicks":                   {http.MethodPost: {"202", "400", "401", "413", "415", "503"}},
	"/v1/r/{token}":                {http.MethodGet: {"302", "404"}},
	"/v1/ads/{ad_id}/click-urls":   {http.MethodPost: {"201", "400", "401"}},
	"/v1/ads/{ad_id}/clicks":       {http.MethodGet: {"200", "400", "401", "500"}},
	"/v1/ads/top":                  {http.MethodGet: {"200", "400", "401", "500"}},
	"/v1/traffic/quality":          {http.MethodGet: {"200", "400", "401", "500"}},
	"/v1/pipeline/status":          {http.MethodGet: {"200", "400", "401", "500"}},
	"/v1/pipeline/recounts":        {http.MethodPost: {"202", "400", "401", "403", "409", "501"}},
	"/v1/pipeline/recounts/{id}":   {http.MethodGet: {"200", "401", "403", "404"}},
	"/healthz":                     {http.MethodGet: {"200"}},
	"/readyz":                      {http.MethodGet: {"200", "503"}},
	"/metrics":                     {http.MethodGet: {"200"}},
	"/v1/metadata/collect":         {http.MethodPost: {"202", "400", "401", "403", "413", "415", "422", "429", "503"}},
	"/v1/metadata/tasks/{task_id}": {http.MethodGet: {"200", "401", "404", "503"}},
	"/v1/auth/revoke":              {http.MethodPost: {"204", "400", "401", "403"}},
	"/v1/admin/routes":             {http.MethodGet: {"200", "401", "403"}},
	"/v1/admin/routes/{route_id}": {
		http.MethodGet:    {"200", "401", "403", "404"},
		http.MethodPut:    {"200", "201", "400", "401", "403", "409"},
		http.MethodDelete: {"204", "401", "403", "404"},
	},
	"/v1/admin/clusters/{cluster}": {http.MethodPut: {"200", "400", "401", "403"}},
}

func TestOperationsAndStatusCodes(t *testing.T) {
	s := loadSpec(t)
	var paths []string
	for p := range s.model.Paths.PathItems.KeysFromOldest() {
		paths = append(paths, p)
	}
	var want []string
	for p := range operations {
		want = append(want, p)
	}
	sort.Strings(paths)
	sort.Strings(want)
	if !slices.Equal(paths, want) {
		t.Fatalf("paths = %v, want %v", paths, want)
	}
	opIDs := map[string]bool{}
	for path, methods := range operations {
		item := s.model.Paths.PathItems.GetOrZero(path)
		ops := item.GetOperations()
		if ops.Len() != len(methods) {
			t.Errorf("%s has %d operations, want %d", path, ops.Len(), len(methods))
		}
		for method, codes := range methods {
			op := ops.GetOrZero(strings.ToLower(method))
			if op == nil {
				t.Errorf("%s %s is missing", method, path)
				continue
			}
			if op.OperationId == "" || opIDs[op.OperationId] {
				t.Errorf("%s %s: operationId %q is empty or not unique", method, path, op.OperationId)
			}
			opIDs[op.OperationId] = true
			if op.Summary == "" || op.Description == "" {
				t.Errorf("%s %s needs a summary and a description", method, path)
			}
			var got []string
			for code := range op.Responses.Codes.KeysFromOldest() {
				got = append(got, code)
			}
			sort.Strings(got)
			if !slices.Equal(got, codes) {
				t.Errorf("%s %s responses = %v, want %v", method, path, got, codes)
			}
			if op.Responses.Default != nil {
				t.Errorf("%s %s has a default response; the contract lists every status", method, path)
			}
			for code, resp := range op.Responses.Codes.FromOldest() {
				if resp.Description == "" {
					t.Errorf("%s %s %s has no description", method, path, code)
				}
				n, _ := strconv.Atoi(code)
				if n < 400 || path == "/readyz" {
					continue
				}
				var types []string
				for mt := range resp.Content.KeysFromOldest() {
					types = append(types, mt)
				}
				if !slices.Equal(types, []string{mediaProb}) {
					t.Errorf("%s %s %s content = %v, want only %s", method, path, code, types, mediaProb)
				}
			}
		}
	}

	// Headers the contract names.
	clicks := s.model.Paths.PathItems.GetOrZero("/v1/clicks").Post
	if h := clicks.Responses.Codes.GetOrZero("503").Headers.GetOrZero("Retry-After"); h == nil || !h.Required {
		t.Errorf("POST /v1/clicks 503 must declare a required Retry-After header")
	}
	var reqTypes []string
	for mt := range clicks.RequestBody.Content.KeysFromOldest() {
		reqTypes = append(reqTypes, mt)
	}
	if !slices.Equal(reqTypes, []string{mediaJSON, mediaND}) {
		t.Errorf("POST /v1/clicks request media types = %v", reqTypes)
	}
	redirect := s.model.Paths.PathItems.GetOrZero("/v1/r/{token}").Get
	if h := redirect.Responses.Codes.GetOrZero("302").Headers.GetOrZero("Location"); h == nil || !h.Required {
		t.Errorf("GET /v1/r/{token} 302 must declare a required Location header")
	}
	if h := redirect.Responses.Codes.GetOrZero("404").Headers; h != nil && h.GetOrZero("Location") != nil {
		t.Errorf("GET /v1/r/{token} 404 must not declare a Location header")
	}
}

func TestComponentSchemas(t *testing.T) {
	s := loadSpec(t)
	schemas := s.model.Components.Schemas
	for _, name := range []string{"Click", "IngestResponse", "Rejection", "Problem", "ClickURLRequest", "ClickURLResponse",
		"Granularity", "ClickSeries", "SeriesPoint", "TopAds", "AdClickCount", "TrafficQuality", "PipelineStatus", "PartitionStatus",
		"TaskID", "CollectRequest", "ExtractionOptions", "CollectAccepted", "TaskStatus", "MetadataTask", "MetadataResult", "MetadataImage", "TaskError"} {
		if schemas.GetOrZero(name) == nil {
			t.Errorf("components.schemas.%s is missing", name)
		}
	}
	for _, name := range []string{"ClicksAccepted", "ClicksBadRequest", "PayloadTooLarge", "UnsupportedMediaType", "ServiceUnavailable", "NotFound",
		"QueryBadRequest", "QueryFailed"} {
		if s.model.Components.Responses.GetOrZero(name) == nil {
			t.Errorf("components.responses.%s is missing", name)
		}
	}
	click := schemas.GetOrZero("Click").Schema()
	if !slices.Equal(click.Required, []string{"click_id", "ad_id"}) {
		t.Errorf("Click.required = %v", click.Required)
	}
	var props []string
	for p := range click.Properties.KeysFromOldest() {
		props = append(props, p)
	}
	wantProps := []string{"click_id", "ad_id", "ts", "ip", "user_agent", "country", "campaign_id", "user_id"}
	if !slices.Equal(props, wantProps) {
		t.Errorf("Click properties = %v, want %v", props, wantProps)
	}
	if click.AdditionalProperties != nil && click.AdditionalProperties.IsB() && !click.AdditionalProperties.B {
		t.Errorf("Click must allow unknown members (forward compatibility)")
	}
	if ts := click.Properties.GetOrZero("ts").Schema(); len(ts.OneOf) != 2 {
		t.Errorf("Click.ts must be a oneOf of an RFC 3339 string and an integer")
	}

	var codes []string
	for _, n := range schemas.GetOrZero("Rejection").Schema().Properties.GetOrZero("code").Schema().Enum {
		codes = append(codes, n.Value)
	}
	wantCodes := []string{"missing", "invalid", "too_long", "ts_in_future", "ts_too_old", "not_object"}
	if !slices.Equal(codes, wantCodes) {
		t.Errorf("Rejection.code enum = %v, want %v", codes, wantCodes)
	}
	var granularities []string
	for _, n := range schemas.GetOrZero("Granularity").Schema().Enum {
		granularities = append(granularities, n.Value)
	}
	if want := []string{"1m", "1h", "1d"}; !slices.Equal(granularities, want) {
		t.Errorf("Granularity enum = %v, want %v", granularities, want)
	}
	for name, want := range map[string][]string{
		"ClickSeries":     {"ad_id", "granularity", "from", "to", "points"},
		"SeriesPoint":     {"window_start", "clicks", "invalid_clicks", "final"},
		"TopAds":          {"from", "to", "ads"},
		"AdClickCount":    {"ad_id", "clicks"},
		"TrafficQuality":  {"from", "to", "valid", "invalid", "duplicates", "too_late"},
		"PipelineStatus":  {"partitions", "events_in_per_second", "events_out_per_second", "oldest_unprocessed_event_age_seconds", "freshness_seconds"},
		"PartitionStatus": {"partition", "log_end_offset", "committed_offset", "lag", "watermark"},
		"CollectRequest":  {"target_url", "requested_by"},
		"CollectAccepted": {"task_id", "status", "estimated_completion_ms", "created_at"},
		"TaskError":       {"code", "message"},
	} {
		if got := schemas.GetOrZero(name).Schema().Required; !slices.Equal(got, want) {
			t.Errorf("%s.required = %v, want %v", name, got, want)
		}
	}
	limit := s.model.Paths.PathItems.GetOrZero("/v1/ads/top").Get.Parameters[3].Schema.Schema()
	if limit.Minimum == nil || *limit.Minimum != 1 || limit.Maximum == nil || *limit.Maximum != 1000 {
		t.Errorf("GET /v1/ads/top limit must be an integer from 1 to 1000")
	}

	problem := schemas.GetOrZero("Problem").Schema()
	for _, p := range []string{"type", "title", "status", "detail", "instance", "rejected", "offset", "line", "field", "parameter", "reason"} {
		if problem.Properties.GetOrZero(p) == nil {
			t.Errorf("Problem.%s is missing", p)
		}
	}
}

// decodeExample turns an example value into the JSON value its schema describes.
func decodeExample(t *testing.T, mediaType string, n *yaml.Node) any {
	t.Helper()
	if n == nil {
		t.Fatalf("example has no value")
	}
	var v any
	if err := n.Decode(&v); err != nil {
		t.Fatalf("decode example: %v", err)
	}
	switch mediaType {
	case mediaND:
		str, ok := v.(string)
		if !ok {
			t.Fatalf("an %s example must be the serialized body, a string; got %T", mediaND, v)
		}
		arr, err := parseNDJSON(str)
		if err != nil {
			t.Fatalf("NDJSON example: %v", err)
		}
		return arr
	case mediaText:
		if _, ok := v.(string); !ok {
			t.Fatalf("a text example must be a string; got %T", v)
		}
	}
	return v
}

func checkValue(t *testing.T, sv schema_validation.SchemaValidator, where string, schema *base.Schema, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%s: marshal example: %v", where, err)
	}
	if ok, errs := sv.ValidateSchemaBytes(schema, b); !ok {
		t.Errorf("%s does not match its schema:%s\n  example: %s", where, errText(errs), b)
	}
}

func TestExamplesMatchSchemas(t *testing.T) {
	s := loadSpec(t)
	sv := schema_validation.NewSchemaValidator(config.WithFormatAssertions())
	count := 0
	seen := map[string]bool{}

	checkContent := func(where string, c *orderedmap.Map[string, *v3.MediaType]) {
		for mt, media := range c.FromOldest() {
			if media.Schema == nil {
				t.Errorf("%s %s has no schema", where, mt)
				continue
			}
			schema := media.Schema.Schema()
			if media.Example != nil {
				t.Errorf("%s %s: use examples (a map), not example", where, mt)
			}
			if media.Examples == nil || media.Examples.Len() == 0 {
				t.Errorf("%s %s has no examples", where, mt)
				continue
			}
			for name, ex := range media.Examples.FromOldest() {
				w := fmt.Sprintf("%s %s example %q", where, mt, name)
				checkValue(t, sv, w, schema, decodeExample(t, mt, ex.Value))
				seen[where+" "+name] = true
				count++
			}
		}
	}
	for path, item := range s.model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			where := strings.ToUpper(method) + " " + path
			if op.RequestBody != nil {
				checkContent(where+" request", op.RequestBody.Content)
			}
			for code, resp := range op.Responses.Codes.FromOldest() {
				if resp.Content != nil {
					checkContent(where+" "+code, resp.Content)
				}
				if resp.Headers != nil {
					for name, h := range resp.Headers.FromOldest() {
						if h.Example == nil {
							t.Errorf("%s %s header %s has no example", where, code, name)
							continue
						}
						checkValue(t, sv, where+" "+code+" header "+name, h.Schema.Schema(), decodeExample(t, "", h.Example))
						count++
					}
				}
			}
			for _, p := range op.Parameters {
				if p.Example == nil {
					t.Errorf("%s parameter %s has no example", where, p.Name)
					continue
				}
				checkValue(t, sv, where+" parameter "+p.Name, p.Schema.Schema(), decodeExample(t, "", p.Example))
				count++
			}
		}
	}

	// The schemas' own examples, and those of their direct properties.
	for name, proxy := range s.model.Components.Schemas.FromOldest() {
		schema := proxy.Schema()
		if len(schema.Examples) == 0 {
			t.Errorf("components.schemas.%s has no examples", name)
		}
		for i, ex := range schema.Examples {
			checkValue(t, sv, fmt.Sprintf("components.schemas.%s examples[%d]", name, i), schema, decodeExample(t, "", ex))
			count++
		}
		if schema.Properties == nil {
			continue
		}
		for prop, pp := range schema.Properties.FromOldest() {
			ps := pp.Schema()
			for i, ex := range ps.Examples {
				checkValue(t, sv, fmt.Sprintf("components.schemas.%s.%s examples[%d]", name, prop, i), ps, decodeExample(t, "", ex))
				count++
			}
		}
	}

	for _, want := range []string{
		"POST /v1/clicks request array",
		"POST /v1/clicks request ndjson",
		"POST /v1/clicks 202 partial",
		"POST /v1/clicks 400 allRejected",
		"POST /v1/clicks 400 brokenJSON",
		"POST /v1/clicks 400 badNDJSONLine",
		"POST /v1/ads/{ad_id}/click-urls 201 minted",
		"GET /v1/ads/{ad_id}/clicks 200 minutes",
		"GET /v1/ads/{ad_id}/clicks 400 tooManyPoints",
		"GET /v1/ads/top 200 lastFiveMinutes",
		"GET /v1/ads/top 400 windowWithFrom",
		"GET /v1/traffic/quality 200 allAds",
		"GET /v1/pipeline/status 200 starting",
		"GET /v1/pipeline/status 500 storeFailed",
	} {
		if !seen[want] {
			t.Errorf("example %q is missing", want)
		}
	}
	if count < 40 {
		t.Errorf("validated only %d examples", count)
	}
}

// example returns the decoded value of a named media-type example.
func example(t *testing.T, s *spec, path, method, code, mediaType, name string) *yaml.Node {
	t.Helper()
	op := s.model.Paths.PathItems.GetOrZero(path).GetOperations().GetOrZero(method)
	var c *v3.MediaType
	if code == "request" {
		c = op.RequestBody.Content.GetOrZero(mediaType)
	} else {
		c = op.Responses.Codes.GetOrZero(code).Content.GetOrZero(mediaType)
	}
	ex := c.Examples.GetOrZero(name)
	if ex == nil {
		t.Fatalf("no example %q for %s %s %s %s", name, method, path, code, mediaType)
	}
	return ex.Value
}

// exampleBody serializes an example as the body of its media type.
func exampleBody(t *testing.T, n *yaml.Node, mediaType string) []byte {
	t.Helper()
	var v any
	if err := n.Decode(&v); err != nil {
		t.Fatal(err)
	}
	if mediaType == mediaND || mediaType == mediaText {
		return []byte(v.(string))
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	clicksURL  = "http://127.0.0.1:8080/v1/clicks"
	mintURL    = "http://127.0.0.1:8080/v1/ads/ad-1001/click-urls"
	seriesURL  = "http://127.0.0.1:8080/v1/ads/ad-1001/clicks"
	topURL     = "http://127.0.0.1:8080/v1/ads/top"
	qualityURL = "http://127.0.0.1:8080/v1/traffic/quality"
)

func newRequest(method, url, contentType, body string) *http.Request {
	var r *http.Request
	if body == "" && contentType == "" {
		r = httptest.NewRequest(method, url, nil)
	} else {
		r = httptest.NewRequest(method, url, strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
	}
	r.Header.Set("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln") // the document requires one; the gateway checks it
	return r
}

func TestRequestsValidate(t *testing.T) {
	s := loadSpec(t)
	token := exampleBody(t, s.model.Components.Parameters.GetOrZero("Token").Example, mediaText)
	clickExamples := func(name, mt string) string {
		return string(exampleBody(t, example(t, s, "/v1/clicks", "post", "request", mt, name), mt))
	}
	tests := []struct {
		name        string
		method, url string
		contentType string
		body        string
		valid       bool
	}{
		{"json single example", "POST", clicksURL, mediaJSON, clickExamples("single", mediaJSON), true},
		{"json array example", "POST", clicksURL, mediaJSON, clickExamples("array", mediaJSON), true},
		{"ndjson example", "POST", clicksURL, mediaND, clickExamples("ndjson", mediaND), true},
		{"json with charset", "POST", clicksURL, mediaJSON + "; charset=utf-8", `{"click_id":"a","ad_id":"b"}`, true},
		{"unknown fields ignored", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","x_future":{"k":1}}`, true},
		{"ts as unix ms", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","ts":1795599000123}`, true},
		{"ts RFC 3339 no fraction", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","ts":"2026-11-25T09:30:00-05:00"}`, true},
		{"ipv6", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","ip":"2001:db8::1"}`, true},
		{"ad_id a number", "POST", clicksURL, mediaJSON, `{"ad_id": 5}`, false},
		{"ad_id a number in array", "POST", clicksURL, mediaJSON, `[{"click_id":"a","ad_id": 5}]`, false},
		{"ad_id a number in ndjson", "POST", clicksURL, mediaND, "{\"click_id\":\"a\",\"ad_id\":\"b\"}\n{\"ad_id\": 5}\n", false},
		{"missing click_id", "POST", clicksURL, mediaJSON, `{"ad_id":"b"}`, false},
		{"click_id with a space", "POST", clicksURL, mediaJSON, `{"click_id":"a b","ad_id":"b"}`, false},
		{"click_id too long", "POST", clicksURL, mediaJSON, `{"click_id":"` + strings.Repeat("x", 129) + `","ad_id":"b"}`, false},
		{"ts boolean", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","ts":true}`, false},
		{"ts fractional number", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","ts":1.5}`, false},
		{"ts not a date-time", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","ts":"yesterday"}`, false},
		{"ip not an address", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","ip":"300.1.2.3"}`, false},
		{"country alpha-3", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","country":"DEU"}`, false},
		{"user_agent too long", "POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b","user_agent":"` + strings.Repeat("u", 513) + `"}`, false},
		{"empty array", "POST", clicksURL, mediaJSON, `[]`, false},
		{"array of non-objects", "POST", clicksURL, mediaJSON, `[1, 2]`, false},
		{"csv", "POST", clicksURL, "text/csv", "click_id,ad_id\na,b\n", false},

		{"mint minimal", "POST", mintURL, mediaJSON, string(exampleBody(t, example(t, s, "/v1/ads/{ad_id}/click-urls", "post", "request", mediaJSON, "minimal"), mediaJSON)), true},
		{"mint full", "POST", mintURL, mediaJSON, string(exampleBody(t, example(t, s, "/v1/ads/{ad_id}/click-urls", "post", "request", mediaJSON, "full"), mediaJSON)), true},
		{"mint missing destination", "POST", mintURL, mediaJSON, `{"ttl_seconds":60}`, false},
		{"mint ftp destination", "POST", mintURL, mediaJSON, `{"destination":"ftp://example.com/x"}`, false},
		{"mint relative destination", "POST", mintURL, mediaJSON, `{"destination":"/summer"}`, false},
		{"mint destination with user info", "POST", mintURL, mediaJSON, `{"destination":"https://user:pw@example.com/"}`, false},
		{"mint ttl too large", "POST", mintURL, mediaJSON, `{"destination":"https://example.com/","ttl_seconds":2592001}`, false},
		{"mint bad impression id", "POST", mintURL, mediaJSON, `{"destination":"https://example.com/","impression_id":"a/b"}`, false},
		{"mint bad ad_id", "POST", "http://127.0.0.1:8080/v1/ads/a%20b/click-urls", mediaJSON, `{"destination":"https://example.com/"}`, false},

		{"series defaults", "GET", seriesURL, "", "", true},
		{"series every parameter", "GET", seriesURL + "?from=2026-11-30T12:00:00Z&to=2026-11-30T14:00:00%2B01:00&granularity=1h&country=de", "", "", true},
		{"series granularity 5m", "GET", seriesURL + "?granularity=5m", "", "", false},
		{"series from not a time", "GET", seriesURL + "?from=yesterday", "", "", false},
		{"series country alpha-3", "GET", seriesURL + "?country=DEU", "", "", false},
		{"series bad ad_id", "GET", "http://127.0.0.1:8080/v1/ads/a%20b/clicks", "", "", false},
		{"top defaults", "GET", topURL, "", "", true},
		{"top window", "GET", topURL + "?window=1h30m&limit=1000&country=FR", "", "", true},
		{"top range", "GET", topURL + "?from=2026-11-30T12:00:00Z&to=2026-11-30T13:00:00Z&limit=1", "", "", true},
		{"top limit 0", "GET", topURL + "?limit=0", "", "", false},
		{"top limit 1001", "GET", topURL + "?limit=1001", "", "", false},
		{"top window not a duration", "GET", topURL + "?window=5", "", "", false},
		{"quality defaults", "GET", qualityURL, "", "", true},
		{"quality of one ad", "GET", qualityURL + "?ad_id=ad-1001&from=2026-11-30T12:00:00Z", "", "", true},
		{"quality bad ad_id", "GET", qualityURL + "?ad_id=a%2Fb", "", "", false},
		{"status", "GET", "http://127.0.0.1:8080/v1/pipeline/status", "", "", true},
		{"status POST", "POST", "http://127.0.0.1:8080/v1/pipeline/status", "", "", false},

		{"redirect", "GET", "http://127.0.0.1:8080/v1/r/" + string(token), "", "", true},
		{"healthz", "GET", "http://127.0.0.1:8080/healthz", "", "", true},
		{"readyz", "GET", "http://127.0.0.1:8080/readyz", "", "", true},
		{"metrics", "GET", "http://127.0.0.1:8080/metrics", "", "", true},
		{"unknown path", "GET", "http://127.0.0.1:8080/v1/nope", "", "", false},
		{"wrong method", "GET", clicksURL, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, errs := s.v.ValidateHttpRequestSync(newRequest(tt.method, tt.url, tt.contentType, tt.body))
			if ok != tt.valid {
				t.Errorf("valid = %v, want %v; errors:%s", ok, tt.valid, errText(errs))
			} else if !ok {
				t.Logf("rejected as expected:%s", errText(errs))
			}
		})
	}
}

func TestResponsesValidate(t *testing.T) {
	s := loadSpec(t)
	type header = map[string]string
	body := func(path, method, code, mt, name string) string {
		return string(exampleBody(t, example(t, s, path, method, code, mt, name), mt))
	}
	clicks := newRequest("POST", clicksURL, mediaJSON, `{"click_id":"a","ad_id":"b"}`)
	mint := newRequest("POST", mintURL, mediaJSON, `{"destination":"https://example.com/"}`)
	redirect := newRequest("GET", "http://127.0.0.1:8080/v1/r/AajxmtgGB2", "", "")
	readyz := newRequest("GET", "http://127.0.0.1:8080/readyz", "", "")
	series := newRequest("GET", seriesURL, "", "")
	top := newRequest("GET", topURL, "", "")
	quality := newRequest("GET", qualityURL, "", "")
	status := newRequest("GET", "http://127.0.0.1:8080/v1/pipeline/status", "", "")
	ok := header{"Content-Type": mediaJSON}
	prob := header{"Content-Type": mediaProb}
	tests := []struct {
		name   string
		req    *http.Request
		status int
		header header
		body   string
		valid  bool
	}{
		{"202 partial example", clicks, 202, header{"Content-Type": mediaJSON}, body("/v1/clicks", "post", "202", mediaJSON, "partial"), true},
		{"202 all accepted example", clicks, 202, header{"Content-Type": mediaJSON}, body("/v1/clicks", "post", "202", mediaJSON, "allAccepted"), true},
		{"202 without rejected", clicks, 202, header{"Content-Type": mediaJSON}, `{"accepted":1}`, false},
		{"202 unknown rejection code", clicks, 202, header{"Content-Type": mediaJSON}, `{"accepted":1,"rejected":[{"index":1,"code":"bogus","field":"ts","message":"x"}]}`, false},
		{"202 negative index", clicks, 202, header{"Content-Type": mediaJSON}, `{"accepted":1,"rejected":[{"index":-1,"code":"invalid","field":"ts","message":"x"}]}`, false},
		{"400 all rejected example", clicks, 400, header{"Content-Type": mediaProb}, body("/v1/clicks", "post", "400", mediaProb, "allRejected"), true},
		{"400 broken JSON example", clicks, 400, header{"Content-Type": mediaProb}, body("/v1/clicks", "post", "400", mediaProb, "brokenJSON"), true},
		{"400 bad NDJSON line example", clicks, 400, header{"Content-Type": mediaProb}, body("/v1/clicks", "post", "400", mediaProb, "badNDJSONLine"), true},
		{"400 line zero", clicks, 400, header{"Content-Type": mediaProb}, `{"title":"Bad Request","status":400,"line":0}`, false},
		{"400 as plain JSON", clicks, 400, header{"Content-Type": mediaJSON}, `{"title":"Bad Request","status":400}`, false},
		{"413", clicks, 413, header{"Content-Type": mediaProb}, body("/v1/clicks", "post", "413", mediaProb, "tooLarge"), true},
		{"415", clicks, 415, header{"Content-Type": mediaProb}, body("/v1/clicks", "post", "415", mediaProb, "unsupported"), true},
		{"503 with Retry-After", clicks, 503, header{"Content-Type": mediaProb, "Retry-After": "5"}, body("/v1/clicks", "post", "503", mediaProb, "draining"), true},
		{"503 without Retry-After", clicks, 503, header{"Content-Type": mediaProb}, body("/v1/clicks", "post", "503", mediaProb, "draining"), false},
		{"undocumented status", clicks, 418, header{"Content-Type": mediaProb}, `{"title":"I'm a teapot","status":418}`, false},
		{"302 with Location", redirect, 302, header{"Location": "https://shop.example.com/summer"}, "", true},
		{"302 without Location", redirect, 302, header{}, "", false},
		{"404 example", redirect, 404, header{"Content-Type": mediaProb}, body("/v1/r/{token}", "get", "404", mediaProb, "invalidToken"), true},
		{"201 example", mint, 201, header{"Content-Type": mediaJSON}, body("/v1/ads/{ad_id}/click-urls", "post", "201", mediaJSON, "minted"), true},
		{"201 without token", mint, 201, header{"Content-Type": mediaJSON}, `{"url":"http://127.0.0.1:8080/v1/r/x","ad_id":"a","impression_id":"i","destination":"https://example.com/","expires_at":"2026-11-25T10:30:00Z"}`, false},
		{"400 mint example", mint, 400, header{"Content-Type": mediaProb}, body("/v1/ads/{ad_id}/click-urls", "post", "400", mediaProb, "badDestination"), true},
		{"readyz 503 text", readyz, 503, header{"Content-Type": "text/plain; charset=utf-8"}, "draining", true},

		{"series minutes example", series, 200, ok, body("/v1/ads/{ad_id}/clicks", "get", "200", mediaJSON, "minutes"), true},
		{"series days example", series, 200, ok, body("/v1/ads/{ad_id}/clicks", "get", "200", mediaJSON, "daysInCountry"), true},
		{"series granularity 5m", series, 200, ok, `{"ad_id":"a","granularity":"5m","from":"2026-11-30T12:00:00Z","to":"2026-11-30T13:00:00Z","points":[]}`, false},
		{"series without points", series, 200, ok, `{"ad_id":"a","granularity":"1m","from":"2026-11-30T12:00:00Z","to":"2026-11-30T13:00:00Z"}`, false},
		{"series point without final", series, 200, ok, `{"ad_id":"a","granularity":"1m","from":"2026-11-30T12:00:00Z","to":"2026-11-30T13:00:00Z","points":[{"window_start":"2026-11-30T12:00:00Z","clicks":1,"invalid_clicks":0}]}`, false},
		{"series lower-case country", series, 200, ok, `{"ad_id":"a","granularity":"1m","country":"de","from":"2026-11-30T12:00:00Z","to":"2026-11-30T13:00:00Z","points":[]}`, false},
		{"series from not a time", series, 200, ok, `{"ad_id":"a","granularity":"1m","from":"noon","to":"2026-11-30T13:00:00Z","points":[]}`, false},
		{"series 400 example", series, 400, prob, body("/v1/ads/{ad_id}/clicks", "get", "400", mediaProb, "badTime"), true},
		{"series 500 example", series, 500, prob, body("/v1/ads/{ad_id}/clicks", "get", "500", mediaProb, "storeFailed"), true},
		{"series 500 as plain JSON", series, 500, ok, `{"title":"Internal Server Error","status":500}`, false},
		{"top example", top, 200, ok, body("/v1/ads/top", "get", "200", mediaJSON, "lastFiveMinutes"), true},
		{"top ad with no clicks", top, 200, ok, `{"from":"2026-11-30T12:00:00Z","to":"2026-11-30T13:00:00Z","ads":[{"ad_id":"a","clicks":0}]}`, false},
		{"top without ads", top, 200, ok, `{"from":"2026-11-30T12:00:00Z","to":"2026-11-30T13:00:00Z"}`, false},
		{"quality example", quality, 200, ok, body("/v1/traffic/quality", "get", "200", mediaJSON, "oneAd"), true},
		{"quality without invalid", quality, 200, ok, `{"from":"2026-11-30T12:00:00Z","to":"2026-11-30T13:00:00Z","valid":1,"duplicates":0,"too_late":0}`, false},
		{"quality negative", quality, 200, ok, `{"from":"2026-11-30T12:00:00Z","to":"2026-11-30T13:00:00Z","valid":-1,"invalid":{"bot_user_agent":0,"ip_rate":0},"duplicates":0,"too_late":0}`, false},
		{"status example", status, 200, ok, body("/v1/pipeline/status", "get", "200", mediaJSON, "running"), true},
		{"status starting example", status, 200, ok, body("/v1/pipeline/status", "get", "200", mediaJSON, "starting"), true},
		{"status without freshness", status, 200, ok, `{"partitions":[],"events_in_per_second":0,"events_out_per_second":0,"oldest_unprocessed_event_age_seconds":0}`, false},
		{"status negative lag", status, 200, ok, `{"partitions":[{"partition":0,"log_end_offset":1,"committed_offset":2,"lag":-1,"watermark":null}],"events_in_per_second":0,"events_out_per_second":0,"oldest_unprocessed_event_age_seconds":0,"freshness_seconds":null}`, false},
		{"status watermark not a time", status, 200, ok, `{"partitions":[{"partition":0,"log_end_offset":1,"committed_offset":1,"lag":0,"watermark":"soon"}],"events_in_per_second":0,"events_out_per_second":0,"oldest_unprocessed_event_age_seconds":0,"freshness_seconds":null}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{
				StatusCode: tt.status,
				Header:     http.Header{},
				Body:       io.NopCloser(bytes.NewReader([]byte(tt.body))),
				Request:    tt.req,
			}
			for k, v := range tt.header {
				resp.Header.Set(k, v)
			}
			ok, errs := s.v.ValidateHttpResponse(tt.req, resp)
			if ok != tt.valid {
				t.Errorf("valid = %v, want %v; errors:%s", ok, tt.valid, errText(errs))
			} else if !ok {
				t.Logf("rejected as expected:%s", errText(errs))
			}
		})
	}
}
