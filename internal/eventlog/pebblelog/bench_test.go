package pebblelog

import (
	"fmt"
	"testing"

	"github.com/pedal-project/pedal/internal/eventlog"
)

// BenchmarkAppend measures durable appends on the real file system: requests of
// 500 records of 200 bytes spread over 16 partitions, from concurrent appenders
// that share WAL syncs.
func BenchmarkAppend(b *testing.B) {
	for _, conc := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("appenders=%d", conc), func(b *testing.B) {
			l, err := Open(b.TempDir(), Config{MinFreeBytes: -1}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if err := l.CreateTopic(b.Context(), "clicks", 16); err != nil {
				b.Fatal(err)
			}
			value := make([]byte, 200)
			b.SetParallelism(max(conc/2, 1)) // GOMAXPROCS=2 here
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				recs := make([]eventlog.Record, 500)
				for pb.Next() {
					for i := range recs {
						recs[i] = eventlog.Record{Partition: int32(i % 16), Value: value}
					}
					if err := l.Append(b.Context(), "clicks", recs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
