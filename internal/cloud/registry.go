package cloud

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotFound reports that the config registry or the snapshot store holds
// nothing that answers the question: no config of the node (or it was
// deleted) at the time asked, no snapshot of the node at or before it.
var ErrNotFound = errors.New("cloud: not found")

// KV headers of the messages of a KV bucket's stream, and the values of the
// KV-Operation header (docs/format/cloud.md, "Config registry").
const (
	headerKVOperation  = "KV-Operation"
	headerStreamSource = "Nats-Stream-Source"
	kvOpDelete         = "DEL"
	kvOpPurge          = "PURGE"
)

// ConfigVersion is one version of a node's config in the registry.
type ConfigVersion struct {
	// Revision is the KV revision of the version: the sequence of the put in
	// the bucket's stream KV_holdfast-config.
	Revision uint64
	// Time is when the version was put: the KV's own timestamp while the KV
	// still holds the revision, else the time HOLDFAST_CONFIG archived it
	// (later by the sourcing delay, normally milliseconds). Times never
	// decrease with the revision.
	Time time.Time
	// YAML is the config; empty for a delete.
	YAML []byte
	// Deleted marks a delete (or purge) marker: the node had no config from
	// then until the next put. ConfigAt never returns one.
	Deleted bool
}

// configSubject is the subject of a node's versions, in the KV stream and in
// HOLDFAST_CONFIG alike.
func configSubject(nodeID string) string {
	return "$KV." + ConfigBucket + "." + ConfigKey(nodeID)
}

// PutConfig puts yaml as the node's config into the registry unless the
// current value is byte-identical. It returns the revision now current and
// whether a new version was written. A config that was deleted is written
// again even if the deleted value matched.
func PutConfig(ctx context.Context, js jetstream.JetStream, nodeID string, yaml []byte) (rev uint64, changed bool, err error) {
	kv, err := js.KeyValue(ctx, ConfigBucket)
	if err != nil {
		return 0, false, fmt.Errorf("cloud: put config of %s: %w", nodeID, err)
	}
	key := ConfigKey(nodeID)
	cur, err := kv.Get(ctx, key)
	switch {
	case err == nil:
		if cur.Operation() == jetstream.KeyValuePut && bytes.Equal(cur.Value(), yaml) {
			return cur.Revision(), false, nil
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, false, fmt.Errorf("cloud: put config of %s: %w", nodeID, err)
	}
	rev, err = kv.Put(ctx, key, yaml)
	if err != nil {
		return 0, false, fmt.Errorf("cloud: put config of %s: %w", nodeID, err)
	}
	return rev, true, nil
}

// ConfigHistory returns every version of the node's config, deletes
// included, oldest first.
//
// It reads HOLDFAST_CONFIG, which keeps every version, and merges in the KV
// bucket's own history (the newest 64 revisions): sourcing into
// HOLDFAST_CONFIG is asynchronous, so a put that the archive has not copied
// yet is still found, and the KV's timestamp of a revision — the time of the
// put itself — is preferred to the archive's. A node without any version
// yields an error wrapping ErrNotFound.
func ConfigHistory(ctx context.Context, js jetstream.JetStream, nodeID string) ([]ConfigVersion, error) {
	byRev := map[uint64]ConfigVersion{}
	if err := archivedVersions(ctx, js, nodeID, byRev); err != nil {
		return nil, fmt.Errorf("cloud: config history of %s: %w", nodeID, err)
	}
	if err := kvVersions(ctx, js, nodeID, byRev); err != nil {
		return nil, fmt.Errorf("cloud: config history of %s: %w", nodeID, err)
	}
	if len(byRev) == 0 {
		return nil, fmt.Errorf("cloud: config history of %s: %w", nodeID, ErrNotFound)
	}
	out := make([]ConfigVersion, 0, len(byRev))
	for _, v := range byRev {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b ConfigVersion) int { return cmp.Compare(a.Revision, b.Revision) })
	// An archive time is later than the put; a newer revision's KV time can
	// then be earlier than an older revision's archive time. Clamp, so that
	// "the version in force at t" is well defined.
	for i := len(out) - 2; i >= 0; i-- {
		if out[i].Time.After(out[i+1].Time) {
			out[i].Time = out[i+1].Time
		}
	}
	return out, nil
}

// ConfigAt returns the node's config in force at at: the last version put at
// or before at, or the latest for a zero at. No version by then, or a delete
// as the version in force, is an error wrapping ErrNotFound.
func ConfigAt(ctx context.Context, js jetstream.JetStream, nodeID string, at time.Time) (ConfigVersion, error) {
	versions, err := ConfigHistory(ctx, js, nodeID)
	if err != nil {
		return ConfigVersion{}, err
	}
	i := len(versions) - 1
	if !at.IsZero() {
		for i >= 0 && versions[i].Time.After(at) {
			i--
		}
	}
	if i < 0 {
		return ConfigVersion{}, fmt.Errorf("cloud: config of %s at %s: %w (first version %s)",
			nodeID, at.Format(time.RFC3339Nano), ErrNotFound, versions[0].Time.Format(time.RFC3339Nano))
	}
	if versions[i].Deleted {
		return ConfigVersion{}, fmt.Errorf("cloud: config of %s at %s: %w (deleted at revision %d)",
			nodeID, at.Format(time.RFC3339Nano), ErrNotFound, versions[i].Revision)
	}
	return versions[i], nil
}

// archivedVersions adds the node's versions in HOLDFAST_CONFIG to byRev.
func archivedVersions(ctx context.Context, js jetstream.JetStream, nodeID string, byRev map[uint64]ConfigVersion) error {
	s, err := js.Stream(ctx, StreamConfig)
	if err != nil {
		return err
	}
	subject := configSubject(nodeID)
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s at seq %d: %w", StreamConfig, seq, err)
		}
		seq = m.Sequence + 1
		rev, err := sourceRevision(m.Header.Get(headerStreamSource))
		if err != nil {
			return fmt.Errorf("%s message %d: %w", StreamConfig, m.Sequence, err)
		}
		op := m.Header.Get(headerKVOperation)
		byRev[rev] = ConfigVersion{
			Revision: rev,
			Time:     m.Time,
			YAML:     m.Data,
			Deleted:  op == kvOpDelete || op == kvOpPurge,
		}
	}
}

// sourceRevision reads the KV revision from a Nats-Stream-Source header:
// "<stream> <seq> …", the second field.
func sourceRevision(h string) (uint64, error) {
	f := strings.Fields(h)
	if len(f) < 2 {
		return 0, fmt.Errorf("%s header %q has no sequence", headerStreamSource, h)
	}
	rev, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil || rev == 0 {
		return 0, fmt.Errorf("%s header %q: bad sequence", headerStreamSource, h)
	}
	return rev, nil
}

// kvVersions adds the node's versions still in the KV bucket to byRev,
// replacing the archive's time of a revision with the KV's.
func kvVersions(ctx context.Context, js jetstream.JetStream, nodeID string, byRev map[uint64]ConfigVersion) error {
	kv, err := js.KeyValue(ctx, ConfigBucket)
	if err != nil {
		return err
	}
	entries, err := kv.History(ctx, ConfigKey(nodeID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		byRev[e.Revision()] = ConfigVersion{
			Revision: e.Revision(),
			Time:     e.Created(),
			YAML:     e.Value(),
			Deleted:  e.Operation() != jetstream.KeyValuePut,
		}
	}
	return nil
}
