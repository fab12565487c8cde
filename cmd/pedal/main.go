// Command pedal runs the pedal ad-click aggregation system and its tools.
//
//	pedal serve        run every component in one process on embedded storage
//	pedal loadgen      drive a running server at a constant rate and report latencies
//	pedal sign-click   mint a signed redirect click URL
//
// Run "pedal <command> --help" for each command's flags; every flag also reads a
// PEDAL_* environment variable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pedal:", err)
		os.Exit(1)
	}
}
