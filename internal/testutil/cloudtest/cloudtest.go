// Package cloudtest checks what the cloud holds, for the end-to-end tests
// (separate from testutil, which internal/cloud's own tests import).
package cloudtest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// RequireEventsOnce waits until the cloud at url holds an event record of
// node at every one of offsets, then checks it holds each (node, offset)
// once and none other.
func RequireEventsOnce(t testing.TB, url, node string, offsets []uint64, timeout time.Duration) {
	t.Helper()
	want := make(map[uint64]bool, len(offsets))
	for _, off := range offsets {
		want[off] = true
	}
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var stored []cloud.Stored
	deadline := time.Now().Add(timeout)
	for {
		stored, err = cloud.StoredOffsets(context.Background(), js, node, cloud.StreamEvents, 0)
		require.NoError(t, err)
		have := make(map[uint64]bool, len(stored))
		for _, s := range stored {
			have[s.Offset] = true
		}
		missing := 0
		for off := range want {
			if !have[off] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the cloud still lacks %d of %s's %d events", missing, node, len(want))
		time.Sleep(200 * time.Millisecond)
	}
	seen := make(map[uint64]bool, len(stored))
	for _, s := range stored {
		require.False(t, seen[s.Offset], "%s's offset %d stored twice in the cloud", node, s.Offset)
		seen[s.Offset] = true
		require.True(t, want[s.Offset], "the cloud holds %s's offset %d, which is no event of its", node, s.Offset)
	}
}
