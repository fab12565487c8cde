package fpset

import (
	"fmt"
	"testing"
)

// The big sizes take seconds per operation and gigabytes; run them once each:
//
//	go test -run x -bench . -benchtime 1x ./internal/clicks/aggregate/fpset/
//
// Each operation of Insert and Match is a batch, so ns/insert and ns/match are
// meaningful at -benchtime 1x too.

const minute0 = 29_000_000 // 2025-02

// fingerprint is the i-th test fingerprint (splitmix64), so the benchmarks
// regenerate keys instead of storing them.
func fingerprint(i int) uint64 {
	z := uint64(i)*0x9e3779b97f4a7c15 + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// fill inserts fingerprints [from, from+n), spread evenly over ten minutes.
func fill(s *Set, from, n int) {
	for i := range n {
		s.Insert(fingerprint(from+i), minute0+uint32(i*10/n))
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func reportBytesPerKey(b *testing.B, s *Set) {
	b.ReportMetric(float64(s.Bytes())/float64(s.Len()), "B/key")
}

// BenchmarkInsert builds a set of n entries, from New(0) (growing as it goes) or
// from New(n).
func BenchmarkInsert(b *testing.B) {
	for _, n := range []int{1_000_000, 50_000_000} {
		for _, hint := range []int{0, n} {
			b.Run(fmt.Sprintf("keys=%s/hint=%s", sizeName(n), sizeName(hint)), func(b *testing.B) {
				var s *Set
				for b.Loop() {
					s = New(hint)
					fill(s, 0, n)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/insert")
				reportBytesPerKey(b, s)
			})
		}
	}
}

// BenchmarkMatch looks up 2^20 fingerprints per operation in a set of n entries:
// ones it holds (hit) or not (miss).
func BenchmarkMatch(b *testing.B) {
	const batch = 1 << 20
	for _, n := range []int{1_000_000, 50_000_000} {
		b.Run("keys="+sizeName(n), func(b *testing.B) {
			s := New(0)
			fill(s, 0, n)
			for _, tc := range []struct {
				name string
				from int // the first fingerprint looked up
				want int // matches per batch
			}{
				{"hit", 0, batch},
				{"miss", n, 0},
			} {
				b.Run(tc.name, func(b *testing.B) {
					next := 0
					for b.Loop() {
						found := 0
						for range batch {
							s.Match(fingerprint(tc.from+next), minute0, minute0+20, func(uint32) bool {
								found++
								return true
							})
							if next++; next == n {
								next = 0
							}
						}
						if found != tc.want {
							b.Fatalf("%d matches, want %d", found, tc.want)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/match")
					reportBytesPerKey(b, s)
				})
			}
		})
	}
}

// BenchmarkLoad measures Match (half hits, half misses) and Insert in a table of
// 25M home slots filled to several loads; it is why the table grows at 0.8.
func BenchmarkLoad(b *testing.B) {
	const batch = 1 << 20
	for _, load := range []float64{0.6, 0.7, 0.8, 0.85, 0.9} {
		b.Run(fmt.Sprintf("load=%.2f", load), func(b *testing.B) {
			s := New(20_000_000)
			s.growAt = int(s.m) // fill past 0.8 without growing
			n := int(load * float64(s.m))
			fill(s, 0, n)
			b.Run("match", func(b *testing.B) {
				for b.Loop() {
					found := 0
					for i := range batch {
						s.Match(fingerprint(i%2*n+i), minute0, minute0+20, func(uint32) bool {
							found++
							return true
						})
					}
					if found < batch/2 {
						b.Fatalf("%d matches, want %d", found, batch/2)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/match")
			})
			b.Run("insert", func(b *testing.B) {
				const batch = 1 << 14 // each adds 0.07% to the load
				next := 2 * n
				for b.Loop() {
					for i := range batch {
						s.Insert(fingerprint(next+i), minute0+9)
					}
					next += batch
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/insert")
			})
		})
	}
}

// BenchmarkExpire slides a window of ten minutes of 1M entries each: an operation
// expires the oldest minute. Refilling the next minute is not timed.
func BenchmarkExpire(b *testing.B) {
	const perMinute = 1_000_000
	s := New(0)
	fill(s, 0, 10*perMinute)
	oldest, next := uint32(minute0), 10*perMinute
	for b.Loop() {
		if got := s.Expire(oldest + 1); got != perMinute {
			b.Fatalf("Expire removed %d, want %d", got, perMinute)
		}
		oldest++
		b.StopTimer()
		for i := range perMinute {
			s.Insert(fingerprint(next+i), oldest+9)
		}
		next += perMinute
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(s.slots)), "ns/slot")
	reportBytesPerKey(b, s)
}

// BenchmarkBytesPerKey reports the memory per entry of a set of n entries grown
// from New(0), and of New(n) holding n.
func BenchmarkBytesPerKey(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000, 10_000_000, 50_000_000} {
		for _, hint := range []int{0, n} {
			b.Run(fmt.Sprintf("keys=%s/hint=%s", sizeName(n), sizeName(hint)), func(b *testing.B) {
				var s *Set
				for b.Loop() {
					s = New(hint)
					fill(s, 0, n)
				}
				reportBytesPerKey(b, s)
			})
		}
	}
}
