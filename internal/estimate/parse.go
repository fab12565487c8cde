package estimate

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseNumber reads a number as people write one in a sheet: 10e9,
// 10_000_000_000 or 10,000,000,000, 3, 0.6.
func ParseNumber(s string) (float64, error) {
	t := strings.ReplaceAll(strings.TrimSpace(s), ",", "")
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, errors.New("not a number (like 10e9, 10_000_000_000 or 0.6)")
	}
	return v, nil
}

// ParseDuration reads a duration in time.ParseDuration's form, or with a
// leading number of days: 30d, 1.5d, 1d12h.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	bad := errors.New("not a duration (like 30d, 168h, 10m or 250ms)")
	var d time.Duration
	if i := strings.IndexByte(t, 'd'); i >= 0 {
		days, err := strconv.ParseFloat(t[:i], 64)
		if err != nil || math.IsNaN(days) || math.Abs(days) > 100_000 {
			return 0, bad
		}
		d, t = time.Duration(days*float64(Day)), t[i+1:]
		if t == "" {
			return d, nil
		}
		if d < 0 || t[0] == '-' || t[0] == '+' {
			return 0, bad // "-1d2h" would be ambiguous
		}
	}
	rest, err := time.ParseDuration(t)
	if err != nil {
		return 0, bad
	}
	return d + rest, nil
}

// ParseBytes reads a size: plain bytes, or with an SI (kB, MB, GB, TB, PB) or
// binary (KiB, MiB, GiB, TiB, PiB) suffix: 4TB, 3.84e12, 512GiB.
func ParseBytes(s string) (float64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50},
		{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15}, {"B", 1},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	v, err := ParseNumber(t)
	if err != nil {
		return 0, errors.New("not a size (like 4TB, 512GiB or 4e12)")
	}
	return v * mult, nil
}
