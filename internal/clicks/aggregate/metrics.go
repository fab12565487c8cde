package aggregate

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/pedal-project/pedal/internal/clicks"
)

type verdictCounters struct {
	valid, duplicate, bot, ipRate, tooLate, malformed prometheus.Counter
}

type metrics struct {
	verdicts      verdictCounters
	commit        prometheus.Histogram
	publish       prometheus.Histogram
	visible       prometheus.Histogram
	publishErrors prometheus.Counter
	takeovers     *prometheus.HistogramVec
	replayed      prometheus.Counter
}

// takeover records a partition taken over from a consumer group: how
// ("new", "resume", "rebuild"), how long it took and the records replayed.
func (m *metrics) takeover(how string, d time.Duration, replayed int64) {
	m.takeovers.WithLabelValues(how).Observe(d.Seconds())
	m.replayed.Add(float64(replayed))
}

func newMetrics(reg prometheus.Registerer, a *Aggregator) *metrics {
	f := promauto.With(reg)
	verdicts := f.NewCounterVec(prometheus.CounterOpts{
		Name: "pedal_aggregate_clicks_total",
		Help: "Clicks processed by the aggregator, by verdict (valid, duplicate, bot_user_agent, ip_rate, too_late, malformed). Reprocessing after a restart counts again.",
	}, []string{"verdict"})
	m := &metrics{
		verdicts: verdictCounters{
			valid:     verdicts.WithLabelValues("valid"),
			duplicate: verdicts.WithLabelValues("duplicate"),
			bot:       verdicts.WithLabelValues("bot_user_agent"),
			ipRate:    verdicts.WithLabelValues("ip_rate"),
			tooLate:   verdicts.WithLabelValues("too_late"),
			malformed: verdicts.WithLabelValues("malformed"),
		},
		commit: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pedal_aggregate_commit_duration_seconds",
			Help:    "Time to commit a partition's state, dedup entries and offset in one synced batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		publish: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pedal_aggregate_publish_duration_seconds",
			Help:    "Time to upsert a flush's window totals into the analytics store.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		visible: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pedal_aggregate_visibility_delay_seconds",
			Help:    "From the receipt of the oldest click of a flush to its totals being queryable.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60},
		}),
		publishErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "pedal_aggregate_publish_errors_total",
			Help: "Failed upserts to the analytics store (each is retried).",
		}),
		takeovers: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pedal_aggregate_takeover_duration_seconds",
			Help:    "Time to take over a partition assigned by the consumer group, by how: new, resume (local state was the latest) or rebuild (replayed from the log).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}, []string{"how"}),
		replayed: f.NewCounter(prometheus.CounterOpts{
			Name: "pedal_aggregate_replayed_records_total",
			Help: "Records replayed from the log to rebuild the state of partitions taken over.",
		}),
	}
	if reg != nil {
		reg.MustRegister(&collector{a: a})
	}
	return m
}

// collector reports per-partition progress at scrape time.
type collector struct{ a *Aggregator }

var (
	descLag = prometheus.NewDesc("pedal_aggregate_lag_records",
		"Records of a partition not yet processed and queryable (log end offset − committed offset).", []string{"partition"}, nil)
	descWatermark = prometheus.NewDesc("pedal_aggregate_watermark_seconds",
		"A partition's event-time watermark (largest event time − allowed lateness), Unix seconds.", []string{"partition"}, nil)
	descFreshness = prometheus.NewDesc("pedal_aggregate_freshness_seconds",
		"Now − the newest event time that is queryable.", nil, nil)
	descDedupKeys = prometheus.NewDesc("pedal_aggregate_dedup_keys",
		"Deduplication fingerprints held in memory.", nil, nil)
	descDedupBytes = prometheus.NewDesc("pedal_aggregate_dedup_bytes",
		"Memory of the deduplication fingerprint sets.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLag, descWatermark, descFreshness, descDedupKeys, descDedupBytes} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	var newest int64
	var keys, bytes int
	for _, p := range c.a.owned() {
		pub := p.snapshot()
		label := strconv.Itoa(int(p.id))
		if _, end, err := c.a.log.Offsets(context.Background(), clicks.Topic, p.id); err == nil {
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(end-pub.next), label)
		}
		if pub.hasMax {
			wm := time.UnixMilli(pub.maxTS).Add(-c.a.cfg.AllowedLateness)
			ch <- prometheus.MustNewConstMetric(descWatermark, prometheus.GaugeValue, float64(wm.UnixMilli())/1000, label)
			newest = max(newest, pub.maxTS)
		}
		keys += pub.dedupKeys
		bytes += pub.dedupBytes
	}
	if newest != 0 {
		ch <- prometheus.MustNewConstMetric(descFreshness, prometheus.GaugeValue, c.a.cfg.Now().Sub(time.UnixMilli(newest)).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(descDedupKeys, prometheus.GaugeValue, float64(keys))
	ch <- prometheus.MustNewConstMetric(descDedupBytes, prometheus.GaugeValue, float64(bytes))
}
