package loadgen

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear like HDR histograms: values are whole
// microseconds; below 2*histSub every value has its own bucket, above that every
// power of two is split into histSub buckets, so a bucket is at most 1/histSub
// (0.8%) of its values wide. Values above histMax (60 s) land in the last bucket;
// the exact maximum is kept aside.
const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histMax     = 60_000_000 // µs
	// histMaxShift is the shift of histMax's bucket: bits.Len64(histMax)-histSubBits-1.
	histMaxShift = 18
	histBuckets  = (histMaxShift + 2) * histSub
)

// histogram counts latencies. Recording is lock-free and safe for concurrent use,
// as are the reads, which see each bucket atomically but not all of them at one
// instant.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Uint64 // µs
}

func bucketOf(us uint64) int {
	if us < 2*histSub {
		return int(us)
	}
	us = min(us, histMax)
	shift := bits.Len64(us) - histSubBits - 1
	return (shift+1)*histSub + int(us>>shift) - histSub
}

// bucketRange returns the values [lo, hi) of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < 2*histSub {
		return uint64(i), uint64(i) + 1
	}
	shift := i/histSub - 1
	top := uint64(i%histSub + histSub)
	return top << shift, (top + 1) << shift
}

func (h *histogram) record(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[bucketOf(us)].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// merge adds o's counts to h.
func (h *histogram) merge(o *histogram) {
	for i := range o.counts {
		if n := o.counts[i].Load(); n != 0 {
			h.counts[i].Add(n)
		}
	}
	om := o.max.Load()
	for {
		m := h.max.Load()
		if om <= m || h.max.CompareAndSwap(m, om) {
			return
		}
	}
}

// moveTo moves h's counts to dst, leaving h empty; records racing with it land
// in either.
func (h *histogram) moveTo(dst *histogram) {
	for i := range h.counts {
		if n := h.counts[i].Swap(0); n != 0 {
			dst.counts[i].Add(n)
		}
	}
	m := h.max.Swap(0)
	for {
		dm := dst.max.Load()
		if m <= dm || dst.max.CompareAndSwap(dm, m) {
			return
		}
	}
}

func (h *histogram) count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

func (h *histogram) maxValue() time.Duration {
	return time.Duration(h.max.Load()) * time.Microsecond
}

// quantile returns the value below or at which a fraction q of the values lie:
// the ceil(q*n)-th smallest, to the bucket's precision (its midpoint, at most the
// maximum). Zero when empty.
func (h *histogram) quantile(q float64) time.Duration {
	var counts [histBuckets]uint64
	var n uint64
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		n += counts[i]
	}
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := min(lo+(hi-1-lo)/2, h.max.Load())
			return time.Duration(v) * time.Microsecond
		}
	}
	return h.maxValue()
}
