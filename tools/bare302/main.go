// Command bare302 is the benchmark peer of pedal's redirect clicks: a bare net/http
// server that answers every request with a 302 and does nothing else. Comparing
// GET /v1/r/{token} against it, with the same load generator on the same machine,
// shows what verifying, recording and syncing a click costs (docs/benchmarks.md).
//
//	go run ./tools/bare302 -addr 127.0.0.1:8099
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8099", "listen address")
	flag.Parse()
	loc := []string{"https://example.com/landing"}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Location"] = loc
		w.WriteHeader(http.StatusFound)
	})
	if err := http.ListenAndServe(*addr, h); err != nil {
		fmt.Fprintln(os.Stderr, "bare302:", err)
		os.Exit(1)
	}
}
