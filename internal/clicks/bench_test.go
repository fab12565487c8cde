package clicks

import (
	"fmt"
	"strings"
	"testing"
)

// batchBody is a realistic 500-click request body.
func batchBody(n int) []byte {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"click_id":"lg-7f3a9c-%d","ad_id":"ad-%06d","ts":%d,"ip":"203.0.%d.%d","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36","country":"US","campaign_id":"cmp-%d","user_id":"u-%d"}`,
			i, i%997, now.UnixMilli()-int64(i), i%256, (i*7)%256, i%97, i*13)
	}
	b.WriteByte(']')
	return []byte(b.String())
}

func BenchmarkDecodeJSON500(b *testing.B) {
	body := batchBody(500)
	var (
		d     Decoder
		batch Batch
	)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		batch.Reset()
		if err := d.DecodeJSON(body, now, &batch); err != nil || batch.Len() != 500 {
			b.Fatalf("decoded %d: %v", batch.Len(), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/click")
}

func TestDecodeAllocations(t *testing.T) {
	body := batchBody(100)
	var (
		d     Decoder
		batch Batch
	)
	d.DecodeJSON(body, now, &batch) // warm the buffers
	allocs := testing.AllocsPerRun(20, func() {
		batch.Reset()
		d.DecodeJSON(body, now, &batch)
	})
	// Steady state: no allocation per click (fastjson reuses its tree, Batch its buffers).
	if allocs > 5 {
		t.Errorf("decoding 100 clicks allocates %.0f times, want at most 5", allocs)
	}
}
