package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pedal-project/pedal/internal/eventlog"
)

// Config configures a Log. Brokers is required; the rest has useful defaults.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// ClientID names this client to the brokers; default "pedal".
	ClientID string
	// ReplicationFactor of the topics CreateTopic creates; 0 means 1 (a single
	// broker, as in tests), -1 the broker's default.
	ReplicationFactor int16
	// Linger is how long a partition's batch waits for more records before it is
	// sent; 0 keeps franz-go's default (10ms), negative sends at once.
	Linger time.Duration
	// FetchMaxWait bounds one Fetch request's wait at the high watermark; Fetch
	// repeats requests until ctx is done. Default 500ms.
	FetchMaxWait time.Duration
	// FetchMaxBytes bounds the bytes one Fetch asks a partition for (the broker
	// still returns at least one batch); default 1 MiB.
	FetchMaxBytes int32
	// Now is the clock for the time of append of records without a timestamp;
	// nil means time.Now.
	Now func() time.Time
	// Opts are extra franz-go options (TLS, SASL, ...), applied last.
	Opts []kgo.Opt
}

// Log is an event log on a Kafka cluster. It holds one franz-go client, shared by
// produce, fetch and admin requests.
type Log struct {
	cfg    Config
	cl     *kgo.Client
	adm    *kadm.Client
	logger *slog.Logger
	m      *metrics

	// mu guards topics, the cache of topic metadata used to check partitions and
	// to find leaders; it is refreshed on a miss or a leadership error.
	mu     sync.Mutex
	topics map[string]topicMeta

	gate struct {
		sync.Mutex
		idle    sync.Cond
		closed  bool
		active  int
		nextID  uint64
		waiters map[uint64]context.CancelCauseFunc // waiting Fetches, canceled by Close
	}
}

type topicMeta struct {
	id      [16]byte
	leaders []int32 // by partition
}

// Open connects to the cluster in cfg.Brokers. logger and reg may be nil.
func Open(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Log, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafkalog: no brokers")
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "pedal"
	}
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = 1
	}
	if cfg.FetchMaxWait <= 0 {
		cfg.FetchMaxWait = 500 * time.Millisecond
	}
	if cfg.FetchMaxBytes <= 0 {
		cfg.FetchMaxBytes = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.WithLogger(kgoLogger{logger}),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), // franz-go's default, stated: durability is the contract
	}
	switch {
	case cfg.Linger > 0:
		opts = append(opts, kgo.ProducerLinger(cfg.Linger))
	case cfg.Linger < 0:
		opts = append(opts, kgo.ProducerLinger(0))
	}
	opts = append(opts, cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkalog: new client: %w", err)
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafkalog: reach brokers %v: %w", cfg.Brokers, err)
	}
	l := &Log{
		cfg:    cfg,
		cl:     cl,
		adm:    kadm.NewClient(cl),
		logger: logger,
		topics: map[string]topicMeta{},
	}
	l.gate.idle.L = &l.gate.Mutex
	l.gate.waiters = map[uint64]context.CancelCauseFunc{}
	l.m = newMetrics(reg)
	return l, nil
}

// CreateTopic creates a topic with n partitions. Creating an existing topic with the
// same count is a no-op; with another count it fails with ErrTopicExists.
func (l *Log) CreateTopic(ctx context.Context, name string, partitions int32) error {
	if name == "" || partitions <= 0 {
		return fmt.Errorf("create topic %q: need a name and at least one partition", name)
	}
	if err := l.enter(); err != nil {
		return err
	}
	defer l.exit()
	_, err := l.adm.CreateTopic(ctx, partitions, l.cfg.ReplicationFactor, nil, name)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %q: %w", name, l.mapErr(err))
	}
	// Wait until the topic is in the metadata (at once on one broker; a newly
	// created topic takes a moment to reach every broker of a real cluster).
	for {
		n, err := l.partitions(ctx, name)
		switch {
		case err == nil && n != partitions:
			return fmt.Errorf("%w: %q has %d partitions", eventlog.ErrTopicExists, name, n)
		case err == nil:
			return nil
		case !errors.Is(err, eventlog.ErrUnknownTopic):
			return fmt.Errorf("create topic %q: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create topic %q: waiting for metadata: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Partitions returns the number of partitions of topic, from the cluster's
// current metadata.
func (l *Log) Partitions(ctx context.Context, name string) (int32, error) {
	if err := l.enter(); err != nil {
		return 0, err
	}
	defer l.exit()
	return l.partitions(ctx, name)
}

func (l *Log) partitions(ctx context.Context, name string) (int32, error) {
	tm, err := l.refresh(ctx, name)
	if err != nil {
		return 0, err
	}
	return int32(len(tm.leaders)), nil
}

// refresh loads a topic's metadata from the cluster into the cache. It asks a
// broker directly: kadm's metadata calls answer from franz-go's cache, which can
// be seconds old, too old to follow a leader that moved.
func (l *Log) refresh(ctx context.Context, name string) (topicMeta, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(name)
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, l.cl)
	if err != nil {
		return topicMeta{}, fmt.Errorf("metadata of %q: %w", name, l.mapErr(err))
	}
	if len(resp.Topics) != 1 {
		return topicMeta{}, fmt.Errorf("%w %q", eventlog.ErrUnknownTopic, name)
	}
	td := resp.Topics[0]
	if err := kerr.ErrorForCode(td.ErrorCode); err != nil {
		return topicMeta{}, fmt.Errorf("metadata of %q: %w", name, l.mapErr(err))
	}
	tm := topicMeta{id: td.TopicID, leaders: make([]int32, len(td.Partitions))}
	for _, pd := range td.Partitions {
		if pd.Partition < 0 || int(pd.Partition) >= len(tm.leaders) {
			return topicMeta{}, fmt.Errorf("metadata of %q: partitions not numbered 0..%d", name, len(tm.leaders)-1)
		}
		tm.leaders[pd.Partition] = pd.Leader
		if errors.Is(kerr.ErrorForCode(pd.ErrorCode), kerr.LeaderNotAvailable) {
			tm.leaders[pd.Partition] = -1
		}
	}
	l.mu.Lock()
	l.topics[name] = tm
	l.mu.Unlock()
	return tm, nil
}

// meta returns a topic's metadata, from the cache when it knows the partition.
// A partition beyond the cached count reloads the metadata, as partitions may
// have been added.
func (l *Log) meta(ctx context.Context, name string, part int32) (topicMeta, error) {
	l.mu.Lock()
	tm, ok := l.topics[name]
	l.mu.Unlock()
	if !ok || part >= int32(len(tm.leaders)) {
		var err error
		if tm, err = l.refresh(ctx, name); err != nil {
			return topicMeta{}, err
		}
	}
	if part < 0 || part >= int32(len(tm.leaders)) {
		return topicMeta{}, fmt.Errorf("%w: topic %q has %d partitions, not %d", eventlog.ErrBadPartition, name, len(tm.leaders), part)
	}
	return tm, nil
}

// Append produces recs to topic and returns once Kafka acknowledged all of them
// (acks=all), setting each one's Offset. A record's Partition must be in range; a
// zero Timestamp becomes the append time. On error some records of the call may
// still have been written, as with any Kafka producer; none is reported as
// written.
func (l *Log) Append(ctx context.Context, name string, recs []eventlog.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.enter(); err != nil {
		return err
	}
	defer l.exit()
	max := int32(-1)
	for _, r := range recs {
		if r.Partition < 0 {
			return fmt.Errorf("append to %q: %w: partition %d", name, eventlog.ErrBadPartition, r.Partition)
		}
		max = maxInt32(max, r.Partition)
	}
	if _, err := l.meta(ctx, name, max); err != nil {
		return fmt.Errorf("append to %q: %w", name, err)
	}
	start := time.Now()
	now := l.cfg.Now()
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	krs := make([]kgo.Record, len(recs))
	wg.Add(len(recs))
	for i := range recs {
		r := &recs[i]
		if r.Timestamp.IsZero() {
			r.Timestamp = now
		}
		krs[i] = kgo.Record{Topic: name, Partition: r.Partition, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
		l.cl.Produce(ctx, &krs[i], func(kr *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
				return
			}
			r.Offset = kr.Offset
		})
	}
	wg.Wait()
	if firstErr != nil {
		l.m.failures.Inc()
		return fmt.Errorf("append to %q: %w", name, l.mapErr(firstErr))
	}
	l.m.observeAppend(len(recs), time.Since(start))
	return nil
}

// Offsets returns the partition's log start offset and high watermark: the offsets
// of the first readable record and of the next record to be made readable.
func (l *Log) Offsets(ctx context.Context, name string, part int32) (start, end int64, err error) {
	if err := l.enter(); err != nil {
		return 0, 0, err
	}
	defer l.exit()
	if _, err := l.meta(ctx, name, part); err != nil {
		return 0, 0, err
	}
	if start, err = l.listOffset(ctx, name, part, l.adm.ListStartOffsets); err != nil {
		return 0, 0, fmt.Errorf("log start offset of %q/%d: %w", name, part, err)
	}
	if end, err = l.listOffset(ctx, name, part, l.adm.ListEndOffsets); err != nil {
		return 0, 0, fmt.Errorf("high watermark of %q/%d: %w", name, part, err)
	}
	return start, end, nil
}

func (l *Log) listOffset(ctx context.Context, name string, part int32, list func(context.Context, ...string) (kadm.ListedOffsets, error)) (int64, error) {
	los, err := list(ctx, name)
	if err != nil {
		return 0, l.mapErr(err)
	}
	if lo, ok := los.Lookup(name, -1); ok && lo.Err != nil {
		return 0, l.mapErr(lo.Err)
	}
	lo, ok := los.Lookup(name, part)
	if !ok {
		return 0, fmt.Errorf("%w: no offset listed for partition %d", eventlog.ErrBadPartition, part)
	}
	if lo.Err != nil {
		return 0, l.mapErr(lo.Err)
	}
	return lo.Offset, nil
}

// Fetch returns up to max records of a partition starting at offset, waiting until
// at least one is readable or ctx is done. An offset below the log start offset or
// above the high watermark fails with ErrOffsetOutOfRange. The returned records own
// their memory.
func (l *Log) Fetch(ctx context.Context, name string, part int32, offset int64, max int) ([]eventlog.Record, error) {
	if max <= 0 {
		max = 1
	}
	ctx, done, err := l.enterWaiting(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	tm, err := l.meta(ctx, name, part)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("%w: %q/%d offset %d", eventlog.ErrOffsetOutOfRange, name, part, offset)
	}
	for {
		rs, err := l.fetchOnce(ctx, name, part, tm, offset, max)
		switch {
		case err == nil && len(rs) > 0:
			return rs, nil
		case err == nil:
			// Nothing arrived within FetchMaxWait: ask again.
		case isLeadershipErr(err) || (ctx.Err() == nil && kgo.IsRetryableBrokerErr(err)):
			// The leader moved or its connection broke: look it up again
			// (after a pause, so a cluster electing a new leader is not
			// flooded).
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			if tm, err = l.refresh(ctx, name); err != nil {
				return nil, l.ctxErr(ctx, err)
			}
			if part >= int32(len(tm.leaders)) {
				return nil, fmt.Errorf("%w: topic %q has %d partitions, not %d", eventlog.ErrBadPartition, name, len(tm.leaders), part)
			}
		default:
			return nil, l.ctxErr(ctx, err)
		}
		if ctx.Err() != nil {
			return nil, l.ctxErr(ctx, ctx.Err())
		}
	}
}

// fetchOnce sends one Fetch request for the partition to its leader.
func (l *Log) fetchOnce(ctx context.Context, name string, part int32, tm topicMeta, offset int64, max int) ([]eventlog.Record, error) {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(l.cfg.FetchMaxWait.Milliseconds())
	req.MinBytes = 1
	req.MaxBytes = l.cfg.FetchMaxBytes
	req.IsolationLevel = 0 // read_uncommitted: up to the high watermark
	req.SessionID = 0
	req.SessionEpoch = -1 // a full fetch, outside any fetch session
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = name
	rt.TopicID = tm.id // Fetch v13+ names topics by ID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = part
	rp.FetchOffset = offset
	rp.CurrentLeaderEpoch = -1
	rp.LogStartOffset = -1
	rp.PartitionMaxBytes = l.cfg.FetchMaxBytes
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)

	leader := tm.leaders[part]
	if leader < 0 {
		return nil, kerr.LeaderNotAvailable
	}
	// A fetch only reads, so it is safe to retry on a new connection; one is
	// needed after a canceled fetch, whose connection franz-go closes.
	kresp, err := l.cl.Broker(int(leader)).RetriableRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, err
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return nil, fmt.Errorf("fetch %q/%d: response has %d topics", name, part, len(resp.Topics))
	}
	fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
		Offset:    offset,
		Topic:     name,
		Partition: part,
	}, &resp.Topics[0].Partitions[0], kgo.DefaultDecompressor(), nil)
	if fp.Err != nil {
		if errors.Is(fp.Err, kerr.OffsetOutOfRange) {
			return nil, fmt.Errorf("%w: %q/%d offset %d not in [%d, %d]: %w",
				eventlog.ErrOffsetOutOfRange, name, part, offset, fp.LogStartOffset, fp.HighWatermark, fp.Err)
		}
		if len(fp.Records) == 0 {
			return nil, fp.Err
		}
	}
	n := min(len(fp.Records), max)
	out := make([]eventlog.Record, 0, n)
	for _, kr := range fp.Records {
		if kr.Offset < offset || kr.Offset >= fp.HighWatermark {
			continue
		}
		if len(out) == max {
			break
		}
		out = append(out, eventlog.Record{
			Partition: part,
			Offset:    kr.Offset,
			Timestamp: kr.Timestamp,
			Key:       kr.Key,
			Value:     kr.Value,
		})
	}
	l.m.fetched.Add(float64(len(out)))
	return out, nil
}

func isLeadershipErr(err error) bool {
	return errors.Is(err, kerr.NotLeaderForPartition) || errors.Is(err, kerr.LeaderNotAvailable) ||
		errors.Is(err, kerr.FencedLeaderEpoch) || errors.Is(err, kerr.UnknownLeaderEpoch) ||
		errors.Is(err, kerr.UnknownTopicID) || errors.Is(err, kerr.ReplicaNotAvailable) ||
		errors.Is(err, kerr.UnknownTopicOrPartition)
}

// CommitOffset stores group's position in a partition, the offset of the next
// record it will process, in Kafka's group coordinator. The offset must be in
// [0, high watermark].
func (l *Log) CommitOffset(ctx context.Context, group, name string, part int32, offset int64) error {
	if group == "" {
		return errors.New("commit offset: empty group")
	}
	_, hw, err := l.Offsets(ctx, name, part)
	if err != nil {
		return fmt.Errorf("commit offset: %w", err)
	}
	if offset < 0 || offset > hw {
		return fmt.Errorf("commit offset: %w: %d not in [0, %d]", eventlog.ErrOffsetOutOfRange, offset, hw)
	}
	if err := l.enter(); err != nil {
		return err
	}
	defer l.exit()
	var os kadm.Offsets
	os.AddOffset(name, part, offset, -1)
	resp, err := l.adm.CommitOffsets(ctx, group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("commit offset of %q on %q/%d: %w", group, name, part, l.mapErr(err))
	}
	return nil
}

// CommittedOffset returns group's committed position in a partition, or -1 when the
// group has committed none.
func (l *Log) CommittedOffset(ctx context.Context, group, name string, part int32) (int64, error) {
	if err := l.enter(); err != nil {
		return 0, err
	}
	defer l.exit()
	if _, err := l.meta(ctx, name, part); err != nil {
		return 0, err
	}
	resp, err := l.adm.FetchOffsetsForTopics(ctx, group, name)
	if errors.Is(err, kerr.GroupIDNotFound) {
		// Kafka answers an unknown group with no offsets; kfake with this error.
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("committed offset of %q on %q/%d: %w", group, name, part, l.mapErr(err))
	}
	o, ok := resp.Lookup(name, part)
	if !ok {
		return -1, nil
	}
	if o.Err != nil {
		return 0, fmt.Errorf("committed offset of %q on %q/%d: %w", group, name, part, l.mapErr(o.Err))
	}
	if o.At < 0 {
		return -1, nil
	}
	return o.At, nil
}

// Close refuses new operations, wakes waiting Fetches with ErrClosed, waits for
// the operations in progress (appends until Kafka answers) and closes the client.
func (l *Log) Close() error {
	l.gate.Lock()
	if l.gate.closed {
		l.gate.Unlock()
		return nil
	}
	l.gate.closed = true
	for _, cancel := range l.gate.waiters {
		cancel(eventlog.ErrClosed)
	}
	for l.gate.active > 0 {
		l.gate.idle.Wait()
	}
	l.gate.Unlock()
	l.cl.Close()
	return nil
}

// enter admits an operation, or fails with ErrClosed; an admitted operation must
// call exit.
func (l *Log) enter() error {
	l.gate.Lock()
	defer l.gate.Unlock()
	if l.gate.closed {
		return eventlog.ErrClosed
	}
	l.gate.active++
	return nil
}

func (l *Log) exit() {
	l.gate.Lock()
	l.gate.active--
	if l.gate.active == 0 {
		l.gate.idle.Broadcast()
	}
	l.gate.Unlock()
}

// enterWaiting admits an operation that may wait long, giving it a context that
// Close cancels with ErrClosed; the operation must call done.
func (l *Log) enterWaiting(ctx context.Context) (context.Context, func(), error) {
	l.gate.Lock()
	defer l.gate.Unlock()
	if l.gate.closed {
		return nil, nil, eventlog.ErrClosed
	}
	l.gate.active++
	ctx, cancel := context.WithCancelCause(ctx)
	id := l.gate.nextID
	l.gate.nextID++
	l.gate.waiters[id] = cancel
	return ctx, func() {
		l.gate.Lock()
		delete(l.gate.waiters, id)
		l.gate.Unlock()
		cancel(nil)
		l.exit()
	}, nil
}

// ctxErr reports ErrClosed for an operation Close interrupted, ctx's error for one
// whose ctx is done, and err otherwise.
func (l *Log) ctxErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, eventlog.ErrClosed) {
		return eventlog.ErrClosed
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return err
}

// mapErr adds eventlog's sentinel to a Kafka error, keeping both for errors.Is.
func (l *Log) mapErr(err error) error {
	switch {
	case errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("%w: %w", eventlog.ErrClosed, err)
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return fmt.Errorf("%w: %w", eventlog.ErrUnknownTopic, err)
	case errors.Is(err, kerr.OffsetOutOfRange):
		return fmt.Errorf("%w: %w", eventlog.ErrOffsetOutOfRange, err)
	case errors.Is(err, kerr.InvalidPartitions):
		return fmt.Errorf("%w: %w", eventlog.ErrBadPartition, err)
	}
	return err
}

func maxInt32(a, b int32) int32 {
	if a > b {
		return a
	}
	return b
}

// kgoLogger passes franz-go's log lines to slog at Info and above; its debug
// output is too chatty for production logs.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelInfo
	switch level {
	case kgo.LogLevelError:
		lvl = slog.LevelError
	case kgo.LogLevelWarn:
		lvl = slog.LevelWarn
	case kgo.LogLevelDebug:
		lvl = slog.LevelDebug
	}
	k.l.Log(context.Background(), lvl, msg, keyvals...)
}
