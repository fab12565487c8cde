package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Rebalancer is told which partitions a group member owns. Its methods are
// called one at a time, from the group's management goroutine: the member
// does not rejoin the group before they return, so a revoked partition is
// handed over only once PartitionsRevoked has stopped working on it and
// committed its position.
type Rebalancer interface {
	// PartitionsAssigned: the member now owns parts.
	PartitionsAssigned(ctx context.Context, parts []int32)
	// PartitionsRevoked: parts go to other members; commit and stop.
	PartitionsRevoked(ctx context.Context, parts []int32)
	// PartitionsLost: the member was removed from the group (a session that
	// expired, a fenced generation); parts already belong to others, so
	// commits would fail. Stop.
	PartitionsLost(ctx context.Context, parts []int32)
}

// MemberConfig configures a consumer-group member.
type MemberConfig struct {
	Group string
	Topic string
	// SessionTimeout: a member silent this long is removed from the group and
	// its partitions reassigned; default 10s (the broker bounds it).
	SessionTimeout time.Duration
	// RebalanceTimeout bounds how long members may take to hand partitions
	// over in a rebalance; default 60s.
	RebalanceTimeout time.Duration
	// HeartbeatInterval; default 1s, and at most a third of SessionTimeout.
	HeartbeatInterval time.Duration
}

// Member is a member of a Kafka consumer group that uses the group for
// partition ownership only: who owns which partition, and a position with
// metadata per partition, committed under the member's generation so that a
// member that lost the partition cannot commit over its successor. Records
// are read through the Log, not through the member.
type Member struct {
	l   *Log
	cfg MemberConfig
	cl  atomic.Pointer[kgo.Client] // set by Join
}

// NewMember prepares a member of cfg.Group for cfg.Topic; it joins the group
// when Join is called.
func (l *Log) NewMember(cfg MemberConfig) (*Member, error) {
	if cfg.Group == "" || cfg.Topic == "" {
		return nil, errors.New("kafkalog: a group member needs a group and a topic")
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = time.Minute
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	cfg.HeartbeatInterval = min(cfg.HeartbeatInterval, cfg.SessionTimeout/3)
	return &Member{l: l, cfg: cfg}, nil
}

// Join joins the group and calls r as partitions are assigned, revoked and
// lost, until ctx is done; then it leaves the group (revoking what the member
// owns) and returns. Fetching through the group's client is paused for good:
// it only keeps the membership.
func (m *Member) Join(ctx context.Context, r Rebalancer) error {
	parts := func(ps map[string][]int32) []int32 {
		p := slices.Clone(ps[m.cfg.Topic])
		slices.Sort(p)
		return p
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(m.l.cfg.Brokers...),
		kgo.ClientID(m.l.cfg.ClientID),
		kgo.WithLogger(kgoLogger{m.l.logger}),
		kgo.ConsumerGroup(m.cfg.Group),
		kgo.ConsumeTopics(m.cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(m.cfg.SessionTimeout),
		kgo.RebalanceTimeout(m.cfg.RebalanceTimeout),
		kgo.HeartbeatInterval(m.cfg.HeartbeatInterval),
		kgo.OnPartitionsAssigned(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			m.cl.Store(cl)
			if p := parts(ps); len(p) > 0 {
				r.PartitionsAssigned(ctx, p)
			}
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			m.cl.Store(cl)
			if p := parts(ps); len(p) > 0 {
				r.PartitionsRevoked(ctx, p)
			}
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			m.cl.Store(cl)
			if p := parts(ps); len(p) > 0 {
				r.PartitionsLost(ctx, p)
			}
		}),
	}
	opts = append(opts, m.l.cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafkalog: group member: %w", err)
	}
	cl.PauseFetchTopics(m.cfg.Topic)
	m.cl.Store(cl)
	<-ctx.Done()
	// Leave (revoking owned partitions through r) before closing, with a
	// bound: a stalled coordinator must not hold the process.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.RebalanceTimeout)
	defer cancel()
	err = cl.LeaveGroupContext(lctx)
	cl.Close()
	if err != nil && lctx.Err() == nil {
		return fmt.Errorf("kafkalog: leave group %q: %w", m.cfg.Group, err)
	}
	return nil
}

// Committed returns the group's committed position in part with its
// metadata; ok is false when none was committed.
func (m *Member) Committed(ctx context.Context, part int32) (offset int64, metadata string, ok bool, err error) {
	resp, err := m.l.adm.FetchOffsetsForTopics(ctx, m.cfg.Group, m.cfg.Topic)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("committed position of %q on %q/%d: %w", m.cfg.Group, m.cfg.Topic, part, m.l.mapErr(err))
	}
	o, found := resp.Lookup(m.cfg.Topic, part)
	if !found || o.At < 0 {
		return 0, "", false, nil
	}
	if o.Err != nil {
		return 0, "", false, fmt.Errorf("committed position of %q on %q/%d: %w", m.cfg.Group, m.cfg.Topic, part, m.l.mapErr(o.Err))
	}
	return o.At, o.Metadata, true, nil
}

// ErrFenced is returned by Commit when the member no longer holds the
// generation it committed under: the partition may already be another's.
var ErrFenced = errors.New("kafkalog: fenced: the group has moved to another generation or forgotten this member")

// Commit stores the member's position in part with metadata, under the
// member's current generation: the coordinator refuses it (ErrFenced) once
// the group has rebalanced without this member or removed it.
func (m *Member) Commit(ctx context.Context, part int32, offset int64, metadata string) error {
	cl := m.cl.Load()
	if cl == nil {
		return errors.New("kafkalog: commit before Join")
	}
	memberID, gen := cl.GroupMetadata()
	if gen < 0 {
		return fmt.Errorf("commit position of %q on %q/%d: %w", m.cfg.Group, m.cfg.Topic, part, ErrFenced)
	}
	tm, err := m.l.meta(ctx, m.cfg.Topic, part)
	if err != nil {
		return fmt.Errorf("commit position of %q on %q/%d: %w", m.cfg.Group, m.cfg.Topic, part, err)
	}
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group = m.cfg.Group
	req.Generation = gen
	req.MemberID = memberID
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = m.cfg.Topic
	rt.TopicID = tm.id // OffsetCommit v10 names topics by id
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition = part
	rp.Offset = offset
	rp.LeaderEpoch = -1
	rp.Metadata = &metadata
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = commitErr(resp)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kerr.IllegalGeneration), errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.FencedInstanceID),
		errors.Is(err, kerr.RebalanceInProgress):
		return fmt.Errorf("commit position of %q on %q/%d: %w (%w)", m.cfg.Group, m.cfg.Topic, part, ErrFenced, err)
	default:
		return fmt.Errorf("commit position of %q on %q/%d: %w", m.cfg.Group, m.cfg.Topic, part, m.l.mapErr(err))
	}
}

func commitErr(resp *kmsg.OffsetCommitResponse) error {
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return err
			}
		}
	}
	return nil
}

// OffsetForTime returns the offset of the first record of part whose
// timestamp is at or after t: every record before it has an earlier
// timestamp. When no record is that recent, it returns the high watermark.
func (l *Log) OffsetForTime(ctx context.Context, name string, part int32, t time.Time) (int64, error) {
	if err := l.enter(); err != nil {
		return 0, err
	}
	defer l.exit()
	if _, err := l.meta(ctx, name, part); err != nil {
		return 0, err
	}
	off, err := l.listOffset(ctx, name, part, func(ctx context.Context, topics ...string) (kadm.ListedOffsets, error) {
		return l.adm.ListOffsetsAfterMilli(ctx, t.UnixMilli(), topics...)
	})
	if err != nil {
		return 0, fmt.Errorf("offset for time %v of %q/%d: %w", t, name, part, err)
	}
	return off, nil
}
