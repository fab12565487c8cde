package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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

With --verify (clicks mode only), the ads are named after the run
(ad-<run>-000000 onwards) and every acknowledged click is kept in the ledger (a
temporary file without --ledger). After the run, loadgen waits for the server's
pipeline to catch up (--verify-timeout), computes the expected totals from the
ledger with the reference model of the aggregation rules, and compares them with
the query API, window by window (ad and minute) and per ad for the quality
figures. Any difference, or a pipeline that does not catch up, exits non-zero.

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
		verify              bool
		vcfg                loadgen.VerifyConfig
	)
	fs.StringVar(&cfg.Target, "target", loadgen.DefaultTarget, usage("target", "base `URL` of the pedal server"))
	fs.StringVar(&cfg.Token, "token", "", usage("token", "bearer token for the API (pedal token --sub loadgen prints one); redirects need none"))
	fs.StringVar(&mode, "mode", string(loadgen.ModeClicks), usage("mode", "what to send: clicks (batched POST /v1/clicks) or redirect (GET /v1/r/{token})"))
	fs.Float64Var(&cfg.Rate, "rate", loadgen.DefaultRate, usage("rate", "clicks per second"))
	fs.DurationVar(&cfg.Duration, "duration", loadgen.DefaultDuration, usage("duration", "how long to send"))
	fs.IntVar(&cfg.Batch, "batch", loadgen.DefaultBatch, usage("batch", "clicks per request in clicks mode"))
	fs.IntVar(&cfg.Concurrency, "concurrency", loadgen.DefaultConcurrency, usage("concurrency", "requests in flight at most"))
	fs.StringVar(&format, "format", string(loadgen.FormatJSON), usage("format", "clicks mode body: json (an array) or ndjson (one click per line)"))
	fs.IntVar(&cfg.Ads, "ads", loadgen.DefaultAds, usage("ads", "number of distinct ads, ad-000000 onwards (ad-<run>-000000 with --verify)"))
	fs.Float64Var(&cfg.ZipfS, "zipf-s", loadgen.DefaultZipfS, usage("zipf-s", "exponent (> 1) of the Zipf distribution of ads"))
	fs.Float64Var(&cfg.DupShare, "dup-share", 0, usage("dup-share", "fraction of clicks resending an earlier click (duplicates)"))
	fs.Float64Var(&cfg.BotShare, "bot-share", 0, usage("bot-share", "fraction of clicks with a bot user agent"))
	fs.Float64Var(&cfg.BurstShare, "burst-share", 0, usage("burst-share", "fraction of clicks in bursts from one IP on one ad within a minute"))
	fs.Float64Var(&cfg.LateShare, "late-share", 0, usage("late-share", "fraction of clicks with ts 2 to 45 minutes old, still counted (clicks mode)"))
	fs.Float64Var(&cfg.TooLateShare, "too-late-share", 0, usage("too-late-share", "fraction of clicks with ts 80 to 90 minutes old, too late to count (clicks mode)"))
	fs.Uint64Var(&cfg.Seed, "seed", 0, usage("seed", "seed of the generated data; 0 picks one and prints it"))
	fs.StringVar(&cfg.Ledger, "ledger", "", usage("ledger", "`file` to write one line per acknowledged click (click_id, ad_id, country, ts_ms, kind, ip, user agent)"))
	fs.StringVar(&signingKey, "click-signing-key", "", usage("click-signing-key", "redirect mode: the server's click signing key, 64 hex digits (prefer the environment to the command line)"))
	fs.StringVar(&dataDir, "data-dir", "./pedal-data", usage("data-dir", "redirect mode: the server's data `directory`, to read "+signingKeyFile+" from when --click-signing-key is not set"))
	fs.DurationVar(&cfg.Timeout, "timeout", loadgen.DefaultTimeout, usage("timeout", "limit of each request"))
	fs.BoolVar(&verify, "verify", false, usage("verify", "after the run, compare the server's aggregates with those expected from the ledger (clicks mode)"))
	fs.DurationVar(&vcfg.Timeout, "verify-timeout", loadgen.DefaultVerifyTimeout, usage("verify-timeout", "how long --verify waits for the pipeline to catch up"))
	fs.StringVar(&vcfg.Report, "verify-report", "", usage("verify-report", "`file` to write the --verify summary and every mismatch to"))

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
	if verify && cfg.Mode == loadgen.ModeRedirect {
		return errors.New("loadgen: --verify needs --mode clicks: the server sets a redirect click's time and country, so the ledger cannot say which window it counts in")
	}

	if cfg.Mode == loadgen.ModeRedirect || signingKey != "" {
		key, err := signingSecret(signingKey, dataDir, false)
		if err != nil {
			return fmt.Errorf("loadgen: %w", err)
		}
		cfg.SigningKey = key
	}

	if !verify {
		_, err := loadgen.Run(ctx, cfg, stdout)
		return err
	}
	cfg.RunScopedAds = true
	tempLedger := cfg.Ledger == ""
	if tempLedger {
		f, err := os.CreateTemp("", "pedal-loadgen-*.ledger")
		if err != nil {
			return fmt.Errorf("loadgen: --verify needs a ledger: %w; set --ledger", err)
		}
		f.Close()
		cfg.Ledger = f.Name()
	}
	s, err := loadgen.Run(ctx, cfg, stdout)
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("loadgen: interrupted, not verified: %w", ctx.Err())
	}
	if err == nil {
		if s.Failed > 0 {
			fmt.Fprintf(stdout, "verify: warning: %d requests failed; the server may have logged the clicks of some (a timeout after the append), which the ledger lacks\n", s.Failed)
		}
		vcfg.Target, vcfg.RequestTimeout, vcfg.Token = cfg.Target, cfg.Timeout, cfg.Token
		_, err = loadgen.Verify(ctx, vcfg, cfg.Ledger, stdout)
	}
	if tempLedger {
		if err != nil {
			fmt.Fprintf(stdout, "verify: ledger kept in %s\n", cfg.Ledger)
		} else {
			os.Remove(cfg.Ledger)
		}
	}
	return err
}
