package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// TestLossLedgerAccountsForEvictedRecords: with the cloud away and a small
// buffer, retention deletes records no sink confirmed. Each is counted in
// status and written to a ledger record; once the cloud is back, its events
// and the ledger's offset ranges together cover every offset the node gave,
// each exactly once, and the counts add up to the events acknowledged.
//
// The buffer sits at its limit, so the pressure levels (checked every second)
// may act too when posting is slow on a loaded machine: sampled events are not
// acknowledged, and dropped or downsampled ones are ledgered with their ranges
// like retention's. The accounting holds whichever path removed a record.
func TestLossLedgerAccountsForEvictedRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("ledger test skipped in -short mode")
	}
	dir := t.TempDir()
	cloudAddr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, "windows:\n  enabled: false\nbuffer:\n  segment_bytes: 64KiB\n  max_bytes: 512KiB\ncloud:\n  url: nats://"+cloudAddr+"\n")
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "site-l")
	defer p.stop(t)

	acked := 0
	var body bytes.Buffer
	var st struct {
		Losses map[string]map[string]uint64 `json:"losses"`
		Buffer struct {
			Next uint64 `json:"next_offset"`
		} `json:"buffer"`
		Sinks []struct {
			Lag uint64 `json:"lag_records"`
		} `json:"sinks"`
	}
	last := ""
	defer func() {
		if t.Failed() {
			t.Logf("last status: %s", last)
		}
	}()
	// Post until retention has deleted records of both streams (it runs as
	// segments roll), plus a few more batches.
	for i, extra := 0, 5; extra > 0; i++ {
		require.Less(t, i, 400, "retention never deleted unsynced records")
		body.Reset()
		for j := range 250 {
			fmt.Fprintf(&body, `{"device_id":"d%d","stream":"%s","value":%d,"id":"l-%d-%d"}`+"\n", j%13, []string{"temp", "hum"}[j%2], j, i, j)
		}
		code, r := post(t, p, "application/x-ndjson", "", body.Bytes())
		require.Equal(t, 200, code, "%+v", r)
		acked += r.Accepted
		for _, rej := range r.Rejected {
			require.Contains(t, rej.Error, "under pressure", "only the pressure levels keep events out")
		}
		last = get(t, p, "/v1/status")
		require.NoError(t, json.Unmarshal([]byte(last), &st))
		if st.Losses["evicted_unsynced"]["temp"] > 0 && st.Losses["evicted_unsynced"]["hum"] > 0 {
			extra--
		}
	}

	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: cloudAddr})
	require.NoError(t, err)
	defer srv.Close()
	waitFor(t, "the backlog to reach the cloud", 120*time.Second, func() bool {
		require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &st))
		return len(st.Sinks) == 1 && st.Sinks[0].Lag == 0
	})

	got := newReceived()
	cloudMessages(t, &got, srv.URL(), cloud.StreamEvents, "site-l")
	covered := map[uint64]string{}
	for off := range got.events {
		covered[off] = "event"
	}
	ledger, lost, evicted := ledgerRecords(t, srv.URL(), "site-l"), uint64(0), 0
	for _, rec := range ledger {
		if len(rec.Ranges) == 0 { // sampled or refused: never acknowledged, never written
			require.Contains(t, []byte{event.LossSampled, event.LossRefused}, rec.Reason)
			continue
		}
		if rec.Reason == event.LossEvictedUnsynced {
			evicted++
		}
		lost += rec.Count
		for _, r := range rec.Ranges {
			for off := r.First; off < r.First+r.Len; off++ {
				_, dup := covered[off]
				require.False(t, dup, "offset %d in the cloud and in the ledger", off)
				covered[off] = "lost"
			}
		}
	}
	require.Positive(t, evicted, "retention's losses reach the cloud's ledger")
	var wantLost uint64
	for _, reason := range []string{"evicted_unsynced", "dropped", "downsampled"} {
		for _, n := range st.Losses[reason] {
			wantLost += n
		}
	}
	require.Equal(t, wantLost, lost, "the ledger in the cloud counts what status counts")
	require.Equal(t, acked, len(got.events)+int(lost), "every acknowledged event is in the cloud or in the ledger")
	// Every offset below the last event is an event in the cloud, an event
	// in the ledger, or a ledger record itself.
	ledgerOffsets := map[uint64]bool{}
	cloudMessagesOffsets(t, srv.URL(), cloud.StreamLedger, "site-l", ledgerOffsets)
	for off := range st.Buffer.Next {
		if _, ok := covered[off]; !ok {
			require.True(t, ledgerOffsets[off], "offset %d is neither in the cloud nor in the ledger", off)
		}
	}
	t.Logf("%d events acknowledged: %d in the cloud, %d lost in %d ledger records (%d of them retention's); losses %v",
		acked, len(got.events), lost, len(ledger), evicted, st.Losses)
}

// cloudMessagesOffsets adds the offsets of node's records in a stream to out.
func cloudMessagesOffsets(t *testing.T, url, stream, node string, out map[uint64]bool) {
	t.Helper()
	stored, err := cloud.StoredOffsets(context.Background(), cloudJS(t, url), node, stream, 0)
	require.NoError(t, err)
	for _, s := range stored {
		out[s.Offset] = true
	}
}

// ledgerRecords reads node's loss-ledger records from HOLDFAST_LEDGER.
func ledgerRecords(t *testing.T, url, node string) []event.LedgerRecord {
	t.Helper()
	var out []event.LedgerRecord
	cloudRecords(t, url, cloud.StreamLedger, node, func(rec cloud.BatchRecord, _ jetstream.Msg) {
		l, err := event.DecodeLedger(rec.Payload)
		require.NoError(t, err)
		out = append(out, l)
	})
	return out
}
