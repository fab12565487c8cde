package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/pedal-project/pedal/bench/capacity"
	"github.com/pedal-project/pedal/internal/estimate"
)

// runEstimate runs "pedal estimate": a capacity sheet for the click pipeline
// from a few inputs and the per-core figures measured by
// bench/capacity/run.sh.
func runEstimate(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("estimate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: pedal estimate [flags]

Prints a capacity sheet for the click pipeline: average and peak rates, ingress
bandwidth, raw and aggregated storage, deduplication memory, Kafka partitions and
the ingest, aggregator and ClickHouse nodes, each line with the arithmetic that
gives it. Per-core figures come from the figures file that bench/capacity/run.sh
writes on the machine it names (the checked-in one is built in). The defaults are
the seed's assumptions (10 billion clicks a day, peaks of 3×) and pedal's own
defaults. Numbers may be written 10e9, 10_000_000_000 or 10,000,000,000; durations
30d, 168h or 10m; sizes 4TB or 512GiB. Every flag defaults to the environment
variable named beside it.

Flags:
`)
		fs.PrintDefaults()
	}
	usage := func(name, text string) string { return text + " [$" + envName("estimate-"+name) + "]" }

	in := estimate.SeedInputs()
	var figuresPath, format string
	fs.Var(&number{&in.ClicksPerDay}, "clicks-per-day", usage("clicks-per-day", "`number` of clicks a day"))
	fs.Var(&number{&in.PeakFactor}, "peak-factor", usage("peak-factor", "peak rate ÷ average rate, a `number` ≥ 1"))
	fs.Var(&size{&in.EventBytes}, "event-bytes", usage("event-bytes", "`size` of one click in the log"))
	fs.Var(&duration{p: &in.Retention}, "retention", usage("retention", "`duration` the log keeps clicks"))
	fs.Var(&duration{p: &in.DedupHorizon}, "dedup-horizon", usage("dedup-horizon", "`duration`: event-time horizon of deduplication (pedal serve --dedup-horizon)"))
	fs.Var(&duration{p: &in.AllowedLateness, zero: true}, "allowed-lateness", usage("allowed-lateness", "`duration` of watermark lag (pedal serve --allowed-lateness)"))
	fs.Var(&count{&in.Replication}, "replication", usage("replication", "`number` of copies of the log and of the analytics tables"))
	fs.Var(&number{&in.Ads}, "ads", usage("ads", "`number` of ads that get clicks"))
	fs.Var(&number{&in.CountriesPerAd}, "countries-per-ad", usage("countries-per-ad", "`number` of countries an ad is clicked from in a minute, on average"))
	fs.Var(&duration{p: &in.AggregateRetention}, "aggregate-retention", usage("aggregate-retention", "`duration` per-minute window totals are kept"))
	fs.Var(&duration{p: &in.FlushInterval}, "flush-interval", usage("flush-interval", "`duration` between aggregator flushes (pedal serve --aggregate-flush-interval)"))
	fs.Var(&count{&in.CoresPerNode}, "cores-per-node", usage("cores-per-node", "`number` of cores of a node"))
	fs.Var(&count{&in.Zones}, "zones", usage("zones", "`number` of availability zones; every role runs a node in each, at least"))
	fs.Var(&number{&in.TargetUtilization}, "target-utilization", usage("target-utilization", "`fraction` of a node's cores and disk to plan for, in (0, 1]; the rest is headroom"))
	fs.Var(&size{&in.DiskBytesPerNode}, "disk-per-node", usage("disk-per-node", "disk `size` of a ClickHouse node"))
	fs.StringVar(&figuresPath, "figures", "", usage("figures", "figures `file` written by bench/capacity/run.sh (default: the built-in "+capacity.FiguresPath+")"))
	fs.StringVar(&format, "format", "text", usage("format", "`format` of the sheet: text or json"))

	// The environment supplies defaults; the command line overrides them.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName("estimate-" + f.Name)
		if v := getenv(name); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("estimate: %s=%q: invalid value for --%s: %v", name, v, f.Name, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if err := fs.Parse(args); err != nil {
		return err // flag.ErrHelp for --help; the flag package has printed the problem
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("estimate: unexpected argument %q; see pedal estimate --help", fs.Arg(0))
	}
	if format != "text" && format != "json" {
		return fmt.Errorf("estimate: --format: %q is neither text nor json", format)
	}
	if err := in.Validate(); err != nil {
		return fmt.Errorf("estimate: --%w", err)
	}

	data, source := capacity.Figures(), "built-in "+capacity.FiguresPath
	if figuresPath != "" {
		b, err := os.ReadFile(figuresPath)
		if err != nil {
			return fmt.Errorf("estimate: --figures: %w", err)
		}
		data, source = b, figuresPath
	}
	figs, err := estimate.Parse(data)
	if err != nil {
		return fmt.Errorf("estimate: %s: %w", source, err)
	}
	sheet, err := estimate.Compute(in, figs)
	if err != nil {
		return err
	}
	if format == "json" {
		return sheet.WriteJSON(stdout, source)
	}
	return sheet.WriteText(stdout, source)
}

// number is a flag of a positive number.
type number struct{ p *float64 }

func (n *number) String() string {
	if n.p == nil {
		return ""
	}
	return estimate.Num(*n.p)
}

func (n *number) Set(s string) error {
	v, err := estimate.ParseNumber(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return errors.New("must be positive")
	}
	*n.p = v
	return nil
}

// count is a flag of a positive whole number.
type count struct{ p *int }

func (c *count) String() string {
	if c.p == nil {
		return ""
	}
	return fmt.Sprint(*c.p)
}

func (c *count) Set(s string) error {
	v, err := estimate.ParseNumber(s)
	if err != nil {
		return err
	}
	if v < 1 || v != math.Trunc(v) || v > 1e9 {
		return errors.New("must be a whole number, at least 1")
	}
	*c.p = int(v)
	return nil
}

// size is a flag of a positive size in bytes.
type size struct{ p *float64 }

func (z *size) String() string {
	if z.p == nil {
		return ""
	}
	return estimate.Bytes(*z.p)
}

func (z *size) Set(s string) error {
	v, err := estimate.ParseBytes(s)
	if err != nil {
		return err
	}
	if v <= 0 {
		return errors.New("must be positive")
	}
	*z.p = v
	return nil
}

// duration is a flag of a positive duration (or zero, when zero is set)
// that also takes days: 30d.
type duration struct {
	p    *time.Duration
	zero bool
}

func (d *duration) String() string {
	if d.p == nil {
		return ""
	}
	return estimate.Duration(*d.p)
}

func (d *duration) Set(s string) error {
	v, err := estimate.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 || v == 0 && !d.zero {
		return errors.New("must be positive")
	}
	*d.p = v
	return nil
}
