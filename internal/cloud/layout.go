package cloud

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultDuplicates is the default de-duplication window of the data streams.
const DefaultDuplicates = 2 * time.Minute

// configHistory is the KV history of holdfast-config: JetStream's maximum.
const configHistory = 64

// LayoutOptions configures the streams EnsureLayout creates. Zero values mean
// the defaults: 2-minute dedup window, unlimited retention, one replica.
type LayoutOptions struct {
	// Duplicates is the Nats-Msg-Id de-duplication window of the data streams.
	Duplicates time.Duration
	// MaxAge, MaxBytes and MaxMsgs limit each data stream; 0 is unlimited.
	MaxAge   time.Duration
	MaxBytes int64
	MaxMsgs  int64
	// Replicas of every stream, bucket and object store (a cluster wants 3).
	Replicas int
}

func (o LayoutOptions) withDefaults() LayoutOptions {
	if o.Duplicates == 0 {
		o.Duplicates = DefaultDuplicates
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = -1
	}
	if o.MaxMsgs == 0 {
		o.MaxMsgs = -1
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	return o
}

// Validate reports options JetStream would reject or that make no sense.
func (o LayoutOptions) Validate() error {
	var errs []error
	if o.Duplicates < 0 {
		errs = append(errs, fmt.Errorf("duplicates %v must not be negative", o.Duplicates))
	}
	if o.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("max_age %v must not be negative", o.MaxAge))
	}
	if o.MaxAge > 0 && o.Duplicates > o.MaxAge {
		errs = append(errs, fmt.Errorf("duplicates %v must not exceed max_age %v", o.Duplicates, o.MaxAge))
	}
	if o.MaxBytes < -1 || o.MaxMsgs < -1 {
		errs = append(errs, errors.New("max_bytes and max_msgs must be -1, 0 (unlimited) or positive"))
	}
	if o.Replicas < 0 || o.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d out of range 1..5", o.Replicas))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cloud layout: %w", err)
	}
	return nil
}

// StreamConfigs returns the configurations of the three data streams, as
// EnsureLayout applies them.
func StreamConfigs(o LayoutOptions) []jetstream.StreamConfig {
	o = o.withDefaults()
	data := func(name, desc string, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     jetstream.FileStorage,
			MaxAge:      o.MaxAge,
			MaxBytes:    o.MaxBytes,
			MaxMsgs:     o.MaxMsgs,
			Duplicates:  o.Duplicates,
			Replicas:    o.Replicas,
			// No direct get: LastOffset asks for the last message on a
			// wildcard subject, which direct get cannot carry.
			AllowDirect: false,
		}
	}
	return []jetstream.StreamConfig{
		data(StreamEvents, "holdfast device events", "holdfast.*.events.>"),
		data(StreamResults, "holdfast window results, alerts, watermarks and late marks",
			"holdfast.*.windows.>", "holdfast.*.alerts.>", "holdfast.*.watermarks.>", "holdfast.*.late.>"),
		data(StreamLedger, "holdfast loss ledger", "holdfast.*.ledger.>"),
	}
}

// configArchive is HOLDFAST_CONFIG: every version of holdfast-config, kept.
func configArchive(o LayoutOptions) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        StreamConfig,
		Description: "every version of holdfast-config, kept forever",
		Sources:     []*jetstream.StreamSource{{Name: "KV_" + ConfigBucket}},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Replicas:    o.Replicas,
		DenyDelete:  true,
		DenyPurge:   true,
	}
}

// EnsureLayout creates the streams, the config bucket with its archive stream,
// and the snapshot object store of docs/format/cloud.md, or updates them to o.
// It is idempotent: a second call with the same options changes nothing.
func EnsureLayout(ctx context.Context, js jetstream.JetStream, o LayoutOptions) error {
	if err := o.Validate(); err != nil {
		return err
	}
	for _, cfg := range StreamConfigs(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("cloud: ensure stream %s: %w", cfg.Name, err)
		}
	}
	d := o.withDefaults()
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      ConfigBucket,
		Description: "holdfast config registry, one key per node",
		History:     configHistory,
		Storage:     jetstream.FileStorage,
		Replicas:    d.Replicas,
	}); err != nil {
		return fmt.Errorf("cloud: ensure kv %s: %w", ConfigBucket, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, configArchive(o)); err != nil {
		return fmt.Errorf("cloud: ensure stream %s: %w", StreamConfig, err)
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      SnapshotsBucket,
		Description: "holdfast state snapshots, <node_id>/<unix_ms>.snap",
		Storage:     jetstream.FileStorage,
		Replicas:    d.Replicas,
	}); err != nil {
		return fmt.Errorf("cloud: ensure object store %s: %w", SnapshotsBucket, err)
	}
	return nil
}
