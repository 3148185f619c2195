package recovery

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/node"
)

// TestRecoverBoundedMemory gives the cloud 30 000 offsets of a node: events of
// a normal stream in batches as they come, those of a low-priority stream all
// at the end (as after an outage, when the normal lane went first), a
// watermark every 1 000 offsets in the results stream, and every 97th offset
// missing. Recovery with 64 KiB to sort in rebuilds the log record
// for record — each once, at its offset, holes where the cloud holds nothing —
// while holding a small fraction of the records in memory at any time. A
// recovery to a point in time stops at the first event received after it.
func TestRecoverBoundedMemory(t *testing.T) {
	const n, sortMemory = 30_000, 64 << 10
	dir := t.TempDir()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer srv.Close()
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()

	base := time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli()
	want := map[uint64][]byte{}
	holes, perStream, shortest := 0, map[string]int{}, 1<<20
	var normal, low, marks cloud.Batch
	var lowBatches []cloud.Batch
	publish := func(kind, stream, lane string, b *cloud.Batch) {
		_, err := js.PublishMsg(ctx, cloud.BatchMsg("n1", kind, stream, lane, b, true))
		require.NoError(t, err)
	}
	for off := range uint64(n) {
		if off%97 == 13 {
			holes++
			continue
		}
		if off%1000 == 999 { // a watermark, in the other JetStream stream
			p := (&event.WatermarkRecord{Stream: "temp", Watermark: base + int64(off)*10 - 5000}).AppendBinary(nil)
			want[off] = p
			marks.Append(off, p)
			continue
		}
		stream := "temp"
		if off%3 == 0 {
			stream = "hum"
		}
		e := event.Event{DeviceID: "d" + string(rune('a'+off%7)), Stream: stream, TS: base + int64(off)*10,
			Value: float64(off % 100), Received: base + int64(off)*10}
		p := e.AppendBinary(nil)
		want[off] = p
		shortest = min(shortest, len(p))
		perStream[stream]++
		if stream == "hum" {
			low.Append(off, p)
			if low.Count == 300 {
				lowBatches = append(lowBatches, low)
				low = cloud.Batch{}
			}
			continue
		}
		normal.Append(off, p)
		if normal.Count == 500 {
			publish("events", "temp", "normal", &normal)
			normal = cloud.Batch{}
		}
	}
	publish("events", "temp", "normal", &normal)
	publish("watermarks", "temp", "normal", &marks)
	lowBatches = append(lowBatches, low)
	for i := range lowBatches {
		publish("events", "hum", "low", &lowBatches[i])
	}

	rep, err := Recover(ctx, Options{CloudURL: srv.URL(), NodeID: "n1", DataDir: filepath.Join(dir, "b"), SortMemory: sortMemory})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problems)
	require.Equal(t, uint64(n), rep.Cut)
	require.Equal(t, holes, rep.Holes)
	require.Equal(t, map[string]int{"events": n - holes - marks.Count, "watermarks": marks.Count}, rep.Records)
	require.Equal(t, perStream, rep.Events)
	// The records went through sorted runs on disk; in memory there were at
	// most as many as fit in sortMemory at entryBytes and the shortest
	// payload each, and one per run while merging.
	require.GreaterOrEqual(t, rep.SortRuns, 2)
	require.LessOrEqual(t, rep.PeakRecordsHeld, sortMemory/(entryBytes+shortest)+rep.SortRuns)
	require.Less(t, rep.PeakRecordsHeld*10, n)
	_, err = os.Stat(filepath.Join(dir, "b", ".recover-sort"))
	require.True(t, os.IsNotExist(err), "the sort runs are removed")
	requireLog(t, filepath.Join(dir, "b"), rep.Cut, want)

	// To a point in time: the first event received after it is the cut.
	at := time.UnixMilli(base + 20_000*10 + 5)
	rep, err = Recover(ctx, Options{CloudURL: srv.URL(), NodeID: "n1", At: at, DataDir: filepath.Join(dir, "c"), SortMemory: sortMemory})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problems)
	require.Equal(t, uint64(20_001), rep.Cut)
	cutHoles := 0
	for off := range uint64(20_001) {
		if _, ok := want[off]; !ok {
			cutHoles++
		}
	}
	require.Equal(t, cutHoles, rep.Holes)
	require.Equal(t, map[string]int{"events": 20_001 - cutHoles - 20, "watermarks": 20}, rep.Records)
	requireLog(t, filepath.Join(dir, "c"), rep.Cut, want)
}

// requireLog checks the rebuilt log below cut: the cloud's record at every
// offset it holds, a hole at every other.
func requireLog(t *testing.T, dataDir string, cut uint64, want map[uint64][]byte) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dataDir
	l, err := node.OpenBuffer(cfg, buffer.Options{SegmentBytes: int64(cfg.Buffer.SegmentBytes)})
	require.NoError(t, err)
	defer l.Close()
	r := l.NewReader(0)
	defer r.Close()
	next := uint64(0)
	for next < cut {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.Equal(t, next, off)
		if w, ok := want[off]; ok {
			require.Equal(t, w, p, "record %d", off)
		} else {
			require.Equal(t, []byte{event.TypeHole}, p, "offset %d", off)
		}
		next++
	}
	require.Equal(t, cut, next, "records in the rebuilt log below the cut")
}
