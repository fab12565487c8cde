package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

const usage = `pedal: ad-click aggregation, URL metadata collection and an API gateway in one binary.

Usage:
  pedal serve [flags]        run every component in one process on embedded storage
  pedal loadgen [flags]      drive a running server at a constant rate and report latencies
  pedal sign-click [flags]   mint a signed redirect click URL
  pedal token [flags]        mint a JWT for the API (HS256, the server's key)
  pedal estimate [flags]     print a capacity sheet from the measured per-core figures
  pedal reconcile [flags]    recount a time range from the log and report where stored totals differ
  pedal replay [flags]       recompute a time range from the log and replace the stored totals

Run "pedal <command> --help" for the flags of a command. Every flag can also be set
with an environment variable: --http-addr of serve is PEDAL_HTTP_ADDR, --rate of
loadgen is PEDAL_LOADGEN_RATE; each command's --help names them.
`

// run dispatches to a subcommand. It reads no global state: tests call it with
// their own arguments, environment and writers.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, getenv, stdout, stderr)
	case "loadgen":
		return runLoadgen(ctx, rest, getenv, stdout, stderr)
	case "sign-click":
		return runSignClick(ctx, rest, getenv, stdout, stderr)
	case "token":
		return runToken(ctx, rest, getenv, stdout, stderr)
	case "estimate":
		return runEstimate(ctx, rest, getenv, stdout, stderr)
	case "reconcile":
		return runRecount(ctx, "reconcile", false, rest, getenv, stdout, stderr)
	case "replay":
		return runRecount(ctx, "replay", true, rest, getenv, stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// envFlags is a FlagSet whose flags take their defaults from PEDAL_* variables.
// Each flag's usage names its variable.
type envFlags struct {
	*flag.FlagSet
	getenv func(string) string
	errs   []error
}

func newFlags(name string, getenv func(string) string, stderr io.Writer) *envFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &envFlags{FlagSet: fs, getenv: getenv}
}

// envName maps a flag name to its variable: http-addr → PEDAL_HTTP_ADDR.
func envName(flagName string) string {
	return "PEDAL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *envFlags) env(name string) (string, bool) {
	v := f.getenv(envName(name))
	return v, v != ""
}

func (f *envFlags) usage(name, help string) string {
	return help + " [$" + envName(name) + "]"
}

func (f *envFlags) String(name, def, help string) *string {
	if v, ok := f.env(name); ok {
		def = v
	}
	return f.FlagSet.String(name, def, f.usage(name, help))
}

func (f *envFlags) Duration(name string, def time.Duration, help string) *time.Duration {
	if v, ok := f.env(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not a duration (like 30s or 168h)", envName(name), v))
		} else {
			def = d
		}
	}
	return f.FlagSet.Duration(name, def, f.usage(name, help))
}

func (f *envFlags) Int(name string, def int, help string) *int {
	if v, ok := f.env(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not an integer", envName(name), v))
		} else {
			def = n
		}
	}
	return f.FlagSet.Int(name, def, f.usage(name, help))
}

func (f *envFlags) Bool(name string, def bool, help string) *bool {
	if v, ok := f.env(name); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: not a boolean (true or false)", envName(name), v))
		} else {
			def = b
		}
	}
	return f.FlagSet.Bool(name, def, f.usage(name, help))
}

// Bytes is a size flag accepting plain bytes or a KiB/MiB/GiB suffix.
func (f *envFlags) Bytes(name string, def int64, help string) *int64 {
	if v, ok := f.env(name); ok {
		n, err := parseBytes(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s=%q: %v", envName(name), v, err))
		} else {
			def = n
		}
	}
	b := byteSize(def)
	f.FlagSet.Var(&b, name, f.usage(name, help))
	return (*int64)(&b)
}

// parse parses args and reports the first bad environment variable.
func (f *envFlags) parse(args []string) error {
	if len(f.errs) > 0 {
		return f.errs[0]
	}
	if err := f.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", f.Name(), f.Args())
	}
	return nil
}

type byteSize int64

func (b *byteSize) String() string { return formatBytes(int64(*b)) }
func (b *byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("not a size (like 8MiB or 1048576)")
	}
	return n * mult, nil
}

func formatBytes(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}
