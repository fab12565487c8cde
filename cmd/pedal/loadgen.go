package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pedal-project/pedal/internal/loadgen"
)

// loadgenEnvPrefix prefixes the environment variable that gives each loadgen flag
// its default: --zipf-s is PEDAL_LOADGEN_ZIPF_S.
const loadgenEnvPrefix = "PEDAL_LOADGEN_"

func loadgenEnvName(flagName string) string {
	return loadgenEnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// runLoadgen runs "pedal loadgen": an open-loop, constant-rate load on a pedal
// server's click ingestion, with progress and a summary on stdout.
func runLoadgen(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: pedal loadgen [flags]

Sends clicks to a pedal server at a constant rate, open loop: request i is due at
start + i/rate whether or not the server keeps up, and latency counts from that
time. Mode clicks POSTs batches to /v1/clicks; mode redirect GETs /v1/r/{token}
with tokens signed by the server's click signing key. Progress is printed every
second, a summary at the end. Every flag defaults to the environment variable
named beside it.

Flags:
`)
		fs.PrintDefaults()
	}
	usage := func(name, text string) string {
		return text + " [$" + loadgenEnvName(name) + "]"
	}

	var (
		cfg                 loadgen.Config
		mode, format        string
		signingKey, dataDir string
	)
	fs.StringVar(&cfg.Target, "target", loadgen.DefaultTarget, usage("target", "base `URL` of the pedal server"))
	fs.StringVar(&mode, "mode", string(loadgen.ModeClicks), usage("mode", "what to send: clicks (batched POST /v1/clicks) or redirect (GET /v1/r/{token})"))
	fs.Float64Var(&cfg.Rate, "rate", loadgen.DefaultRate, usage("rate", "clicks per second"))
	fs.DurationVar(&cfg.Duration, "duration", loadgen.DefaultDuration, usage("duration", "how long to send"))
	fs.IntVar(&cfg.Batch, "batch", loadgen.DefaultBatch, usage("batch", "clicks per request in clicks mode"))
	fs.IntVar(&cfg.Concurrency, "concurrency", loadgen.DefaultConcurrency, usage("concurrency", "requests in flight at most"))
	fs.StringVar(&format, "format", string(loadgen.FormatJSON), usage("format", "clicks mode body: json (an array) or ndjson (one click per line)"))
	fs.IntVar(&cfg.Ads, "ads", loadgen.DefaultAds, usage("ads", "number of distinct ads, ad-000000 onwards"))
	fs.Float64Var(&cfg.ZipfS, "zipf-s", loadgen.DefaultZipfS, usage("zipf-s", "exponent (> 1) of the Zipf distribution of ads"))
	fs.Float64Var(&cfg.DupShare, "dup-share", 0, usage("dup-share", "fraction of clicks resending an earlier click (duplicates)"))
	fs.Float64Var(&cfg.BotShare, "bot-share", 0, usage("bot-share", "fraction of clicks with a bot user agent"))
	fs.Float64Var(&cfg.BurstShare, "burst-share", 0, usage("burst-share", "fraction of clicks in bursts from one IP on one ad within a minute"))
	fs.Float64Var(&cfg.LateShare, "late-share", 0, usage("late-share", "fraction of clicks with ts 2 to 90 minutes old (clicks mode)"))
	fs.Uint64Var(&cfg.Seed, "seed", 0, usage("seed", "seed of the generated data; 0 picks one and prints it"))
	fs.StringVar(&cfg.Ledger, "ledger", "", usage("ledger", "`file` to write one line per acknowledged click (click_id, ad_id, country, ts_ms, kind)"))
	fs.StringVar(&signingKey, "click-signing-key", "", usage("click-signing-key", "redirect mode: the server's click signing key, 64 hex digits (prefer the environment to the command line)"))
	fs.StringVar(&dataDir, "data-dir", "./pedal-data", usage("data-dir", "redirect mode: the server's data `directory`, to read "+signingKeyFile+" from when --click-signing-key is not set"))
	fs.DurationVar(&cfg.Timeout, "timeout", loadgen.DefaultTimeout, usage("timeout", "limit of each request"))

	// The environment supplies defaults; the command line overrides them.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := loadgenEnvName(f.Name)
		if v := getenv(name); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("loadgen: %s=%q: invalid value for --%s: %v", name, v, f.Name, err)
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
		return fmt.Errorf("loadgen: unexpected argument %q; see pedal loadgen --help", fs.Arg(0))
	}
	cfg.Mode, cfg.Format = loadgen.Mode(mode), loadgen.Format(format)

	if cfg.Mode == loadgen.ModeRedirect || signingKey != "" {
		key, err := signingSecret(signingKey, dataDir, false)
		if err != nil {
			return fmt.Errorf("loadgen: %w", err)
		}
		cfg.SigningKey = key
	}

	_, err := loadgen.Run(ctx, cfg, stdout)
	return err
}
