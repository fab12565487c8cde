// Command kfake runs franz-go's in-process Kafka-protocol cluster
// (github.com/twmb/franz-go/pkg/kfake) as a stand-alone broker on a loopback
// port, for benchmarks of `pedal serve --log kafka://...` on a machine without
// a Kafka broker (bench/scale/run.sh). It keeps every record in memory and
// writes nothing to disk: it measures pedal's Kafka client path, not a
// production broker's disks, replication or network.
//
//	go run ./bench/scale/kfake -port 9092
//
// It prints "kfake: listening on 127.0.0.1:PORT" once it accepts connections
// and runs until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kfake", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", 9092, "loopback port to listen on (127.0.0.1 only; 0 picks a free one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *port < 0 || *port > 65535 {
		return fmt.Errorf("-port %d: want 0 to 65535", *port)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(*port))
	if err != nil {
		return fmt.Errorf("start cluster on 127.0.0.1:%d: %w", *port, err)
	}
	defer c.Close()
	for _, a := range c.ListenAddrs() {
		fmt.Fprintf(stdout, "kfake: listening on %s\n", a)
	}
	<-ctx.Done()
	return nil
}
