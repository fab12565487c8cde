package outbox

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/pedal-project/pedal/internal/eventlog"
)

// Log is the part of an event log (pebblelog, kafkalog) that LogPublisher needs.
type Log interface {
	Append(ctx context.Context, topic string, recs []eventlog.Record) error
	Partitions(ctx context.Context, topic string) (int32, error)
}

// LogPublisher publishes messages to an event log: one record per message, keyed
// by aggregate id and partitioned with eventlog.PartitionFor, so one aggregate's
// events share a partition and keep their order. The record value is the
// Message as JSON (consumers deduplicate on event_id); its timestamp is the
// row's created_at.
type LogPublisher struct {
	Log Log
	// Topic maps an event type to a topic; nil or "" means DefaultTopic.
	Topic func(eventType string) string
	// DefaultTopic is used when Topic gives nothing.
	DefaultTopic string
}

// Publish appends msgs, one Append per topic, in order.
func (p LogPublisher) Publish(ctx context.Context, msgs []Message) error {
	var order []string
	byTopic := map[string][]eventlog.Record{}
	parts := map[string]int32{}
	for _, m := range msgs {
		topic := p.DefaultTopic
		if p.Topic != nil {
			if t := p.Topic(m.EventType); t != "" {
				topic = t
			}
		}
		if topic == "" {
			return fmt.Errorf("publish %s: no topic for event type %q", m.EventID, m.EventType)
		}
		n, ok := parts[topic]
		if !ok {
			var err error
			if n, err = p.Log.Partitions(ctx, topic); err != nil {
				return fmt.Errorf("publish to %q: %w", topic, err)
			}
			parts[topic] = n
			order = append(order, topic)
		}
		v, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("publish %s: %w", m.EventID, err)
		}
		byTopic[topic] = append(byTopic[topic], eventlog.Record{
			Partition: eventlog.PartitionForString(m.AggregateID, n),
			Timestamp: m.CreatedAt,
			Key:       []byte(m.AggregateID),
			Value:     v,
		})
	}
	for _, topic := range order {
		if err := p.Log.Append(ctx, topic, byTopic[topic]); err != nil {
			return fmt.Errorf("publish to %q: %w", topic, err)
		}
	}
	return nil
}
