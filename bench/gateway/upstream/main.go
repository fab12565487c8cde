// Command upstream is the upstream of the gateway benchmark (bench/gateway/run.sh):
// a bare net/http server that answers every request with 200 and the same 64-byte
// body, so that what is measured through a proxy is the proxy.
//
//	go run ./bench/gateway/upstream -addr 127.0.0.1:18080
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	size := flag.Int("size", 64, "bytes of the body")
	flag.Parse()
	body := []byte(strings.Repeat("x", *size-1) + "\n")
	ct := []string{"text/plain"}
	cl := []string{fmt.Sprint(len(body))}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = ct
		w.Header()["Content-Length"] = cl
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
	if err := http.ListenAndServe(*addr, h); err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}
