package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// call makes one request with token ("" for none: the test's default token
// is not added) and decodes a JSON answer.
func call(t *testing.T, method, url, token, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, resp.Header, m
}

func mintToken(t *testing.T, dataDir, sub, role string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(t.Context(), []string{"token", "--data-dir", dataDir, "--sub", sub, "--role", role}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out.String())
}

// TestGatewayInFrontOfEveryAPI: the first start stores the routes and a key;
// `pedal token` mints tokens the server accepts; routes are public,
// authenticated or admin; metadata tasks belong to their requester; an admin
// routes a path to an external upstream with two requests.
func TestGatewayInFrontOfEveryAPI(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, "--data-dir", dir, "--jwt-secret", "") // the key is generated into the data dir
	alice, bob, root := mintToken(t, dir, "alice", "user"), mintToken(t, dir, "bob", "user"), mintToken(t, dir, "root", "admin")

	if code, _, _ := call(t, "GET", s.url+"/healthz", "", ""); code != 200 {
		t.Errorf("public /healthz: %d", code)
	}
	code, h, m := call(t, "GET", s.url+"/v1/ads/top", "", "")
	if code != 401 || m["reason"] != "unauthorized" || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("no token: %d %v", code, m)
	}
	if code, _, _ := call(t, "GET", s.url+"/v1/ads/top", testToken, ""); code != 401 {
		t.Errorf("a token of another key: %d", code)
	}
	if code, _, m := call(t, "GET", s.url+"/v1/ads/top", alice, ""); code != 200 {
		t.Errorf("alice: %d %v", code, m)
	}
	if code, _, _ := call(t, "GET", s.url+"/v1/admin/routes", alice, ""); code != 403 {
		t.Errorf("admin API as a user: %d", code)
	}
	code, _, m = call(t, "GET", s.url+"/v1/admin/routes", root, "")
	if routes, _ := m["routes"].([]any); code != 200 || len(routes) != len(defaultRoutes()) {
		t.Errorf("admin API: %d, %d routes", code, len(routes))
	}

	// Metadata tasks belong to their requester.
	if code, _, m := call(t, "POST", s.url+"/v1/metadata/collect", alice, `{"target_url": "https://news.example/", "requested_by": "bob"}`); code != 403 || m["parameter"] != "requested_by" {
		t.Errorf("collect for another: %d %v", code, m)
	}
	code, _, m = call(t, "POST", s.url+"/v1/metadata/collect", alice, `{"target_url": "https://news.example/", "requested_by": "alice"}`)
	if code != 202 {
		t.Fatalf("collect: %d %v", code, m)
	}
	task := s.url + "/v1/metadata/tasks/" + m["task_id"].(string)
	if code, _, _ := call(t, "GET", task, alice, ""); code != 200 {
		t.Errorf("own task: %d", code)
	}
	if code, _, _ := call(t, "GET", task, bob, ""); code != 404 {
		t.Errorf("another's task: %d", code)
	}
	if code, _, _ := call(t, "GET", task, root, ""); code != 200 {
		t.Errorf("a task as an admin: %d", code)
	}

	// An external upstream, routed with the admin API.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw %s as %s", r.URL.Path, r.Header.Get("X-Pedal-Subject"))
	}))
	defer up.Close()
	if code, _, m := call(t, "PUT", s.url+"/v1/admin/clusters/echo", root, fmt.Sprintf(`{"endpoints": [%q]}`, up.URL)); code != 200 {
		t.Fatalf("put cluster: %d %v", code, m)
	}
	if code, _, m := call(t, "PUT", s.url+"/v1/admin/routes/echo", root, `{"path_pattern": "GET /echo/", "target_cluster": "echo"}`); code != 201 {
		t.Fatalf("put route: %d %v", code, m)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		req, _ := http.NewRequest("GET", s.url+"/echo/x", nil)
		req.Header.Set("Authorization", "Bearer "+alice)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			if string(b) != "upstream saw /echo/x as alice" {
				t.Errorf("upstream answer %q", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new route was not served within 2s: %d %s", resp.StatusCode, b)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Revocation.
	if code, _, _ := call(t, "POST", s.url+"/v1/auth/revoke", alice, ""); code != 204 {
		t.Errorf("revoke: %d", code)
	}
	if code, _, _ := call(t, "GET", s.url+"/v1/ads/top", alice, ""); code != 401 {
		t.Errorf("a revoked token: %d", code)
	}
	if code, _, _ := call(t, "GET", s.url+"/v1/ads/top", bob, ""); code != 200 {
		t.Errorf("another token after a revocation: %d", code)
	}

	// pedal token's errors.
	for _, args := range [][]string{{"token", "--data-dir", dir}, {"token", "--data-dir", dir, "--sub", "x", "--role", "root"},
		{"token", "--data-dir", t.TempDir(), "--sub", "x"}} {
		if err := run(t.Context(), args, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
}
