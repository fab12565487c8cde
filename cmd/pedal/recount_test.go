package main

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReconcileAndReplay sends two hours of clicks (late ones, duplicates,
// bots) to a server, then recounts them from the log: pedal reconcile finds
// no difference, pedal replay rewrites the final windows, and reconcile
// still agrees. Bad arguments are refused naming the flag.
func TestReconcileAndReplay(t *testing.T) {
	srv := startServer(t, "--data-dir", t.TempDir(), "--partitions", "4")
	now := time.Now().UTC()
	var b strings.Builder
	b.WriteByte('[')
	for i := range 480 {
		if i > 0 {
			b.WriteByte(',')
		}
		id := i
		if i%25 == 0 && i > 0 {
			id = i - 7 // a duplicate of an earlier click
		}
		ua := "Mozilla/5.0"
		if i%13 == 0 {
			ua = "Googlebot/2.1"
		}
		ts := now.Add(-2*time.Hour + time.Duration(i)*15*time.Second)
		if i%40 == 0 {
			ts = ts.Add(-20 * time.Minute) // late
		}
		fmt.Fprintf(&b, `{"click_id":"c-%d","ad_id":"ad-%d","ts":%q,"user_agent":%q,"country":"DE"}`, id, id%9, ts.Format(time.RFC3339Nano), ua)
	}
	b.WriteByte(']')
	req, _ := http.NewRequest("POST", srv.url+"/v1/clicks", strings.NewReader(b.String()))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post clicks: %v %v", resp, err)
	}
	resp.Body.Close()

	recount := func(cmd string, args ...string) (string, error) {
		var out bytes.Buffer
		err := run(t.Context(), append([]string{cmd, "--target", srv.url, "--token", testToken, "--poll", "50ms"}, args...),
			func(string) string { return "" }, &out, &out)
		return out.String(), err
	}
	out, err := recount("reconcile", "--from", "3h")
	if err != nil || !strings.Contains(out, "reconcile: no difference") {
		t.Fatalf("reconcile: %v\n%s", err, out)
	}
	var windows, ads int
	m := regexp.MustCompile(`reconcile: (\d+) windows of (\d+) ads`).FindStringSubmatch(out)
	if m != nil {
		windows, _ = strconv.Atoi(m[1])
		ads, _ = strconv.Atoi(m[2])
	}
	if m == nil || windows == 0 || ads != 9 {
		t.Fatalf("reconcile covered %d windows of %d ads, want windows of 9 ads:\n%s", windows, ads, out)
	}
	if !strings.Contains(out, "the others are still open") {
		t.Errorf("reconcile does not say the newest windows were left out:\n%s", out)
	}
	out, err = recount("replay", "--from", "3h")
	if err != nil || !strings.Contains(out, fmt.Sprintf("replay: wrote %d windows (0 differed before)", windows)) {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if out, err := recount("reconcile", "--from", "3h"); err != nil || !strings.Contains(out, "no difference") {
		t.Fatalf("reconcile after replay: %v\n%s", err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "1h", "--to", "2h"}, "is not before --to"},
		{[]string{"--from", "yesterday"}, "--from"},
		{[]string{}, "--from"},
		{[]string{"--from", "1h", "--to", "-5m"}, "--to"},
	} {
		if _, err := recount("reconcile", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("reconcile %v: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}
