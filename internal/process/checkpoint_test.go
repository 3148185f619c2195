package process

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

func TestCheckpointCodec(t *testing.T) {
	c := &Checkpoint{
		Offset: 4711, WrittenAt: time.UnixMilli(1_790_000_000_123),
		Options: windowOptions{SizesMS: []uint64{1000, 60000}, LatenessMS: -1, Accuracy: 0.01},
		Streams: [][]byte{{1, 2, 3}, {4}},
		Alerts:  alert.EngineState{Keys: []alert.KeyState{{Rule: "hot", Fingerprint: "f", DeviceID: "d1", Run: 2, Since: 5}}},
		History: []alert.Alert{{ID: "hot/d1/5", Rule: "hot", Severity: alert.Critical, State: alert.Firing, Stream: "temp", FiredAt: 5}},
	}
	data, err := c.Encode()
	require.NoError(t, err)
	got, err := DecodeCheckpoint(data)
	require.NoError(t, err)
	require.Equal(t, c.Offset, got.Offset)
	require.True(t, c.WrittenAt.Equal(got.WrittenAt))
	require.Equal(t, c.Options, got.Options)
	require.Equal(t, c.Streams, got.Streams)
	require.Equal(t, c.Alerts, got.Alerts)
	require.Equal(t, c.History, got.History)

	// Every single-bit flip and every truncation is detected.
	for i := range len(data) * 8 {
		bad := append([]byte(nil), data...)
		bad[i/8] ^= 1 << (i % 8)
		_, err := DecodeCheckpoint(bad)
		require.Error(t, err, "bit %d", i)
	}
	for n := range len(data) {
		_, err := DecodeCheckpoint(data[:n])
		require.Error(t, err, "truncated to %d", n)
	}
}

// FuzzDecodeCheckpoint: arbitrary bytes (with a valid checksum, so the
// decoder proper is exercised) never panic.
func FuzzDecodeCheckpoint(f *testing.F) {
	c := &Checkpoint{Offset: 1, Options: windowOptions{SizesMS: []uint64{1000}, Accuracy: 0.01}}
	data, _ := c.Encode()
	f.Add(data[:len(data)-4])
	f.Fuzz(func(t *testing.T, body []byte) {
		sum := crc32Castagnoli(body)
		_, _ = DecodeCheckpoint(append(body, byte(sum), byte(sum>>8), byte(sum>>16), byte(sum>>24)))
	})
}

// TestDamagedCheckpointFallsBack: with the newest checkpoint damaged the
// processor resumes from the one before; with all damaged it replays the whole
// log; the results are those of a run that never stopped either way.
func TestDamagedCheckpointFallsBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	fs := vfs.NewMem()
	ck := CheckpointOptions{Interval: time.Hour, Keep: 3} // only at clean shutdowns
	clock := t0
	var offsets []uint64
	for range 3 {
		n := openNodeWith(t, fs, 2, ck)
		for range 20 {
			clock += 100
			_, err := n.st.Append(context.Background(), batch(rng, clock, 30))
			require.NoError(t, err)
		}
		n.caughtUp(t)
		n.close() // writes a checkpoint
		names, err := listCheckpoints(fs, "/d/checkpoints")
		require.NoError(t, err)
		c := loadFile(t, fs, names[0])
		offsets = append(offsets, c.Offset)
	}
	names, err := listCheckpoints(fs, "/d/checkpoints")
	require.NoError(t, err)
	require.Len(t, names, 3)

	reference := openNode(t, fs, 2) // no checkpoints: a replay from the start
	reference.settle(t)
	wantW, wantA := outputs(t, reference)
	reference.close()

	damage := func(name string) {
		path := filepath.Join("/d/checkpoints", name)
		data, ok := fs.Bytes(path)
		require.True(t, ok)
		data[len(data)/2] ^= 0x40
		fs.SetBytes(path, data)
	}
	damage(names[0])
	n := openNodeWith(t, fs, 3, ck)
	require.Equal(t, offsets[1], n.proc.start, "resumed from the previous checkpoint")
	n.settle(t)
	gotW, gotA := outputs(t, n)
	diffWindows(t, wantW, gotW)
	require.True(t, reflect.DeepEqual(wantW, gotW), "window records differ (above)")
	require.Equal(t, wantA, gotA)
	n.close()

	names, err = listCheckpoints(fs, "/d/checkpoints")
	require.NoError(t, err)
	for _, name := range names {
		damage(name)
	}
	n = openNodeWith(t, fs, 1, ck)
	defer n.close()
	require.Zero(t, n.proc.start, "no usable checkpoint: replay from the start")
	n.settle(t)
	gotW, gotA = outputs(t, n)
	diffWindows(t, wantW, gotW)
	require.True(t, reflect.DeepEqual(wantW, gotW), "window records differ (above)")
	require.Equal(t, wantA, gotA)
}

func loadFile(t *testing.T, fs *vfs.MemFS, name string) *Checkpoint {
	t.Helper()
	data, err := vfs.ReadFile(fs, filepath.Join("/d/checkpoints", name))
	require.NoError(t, err)
	c, err := DecodeCheckpoint(data)
	require.NoError(t, err)
	return c
}

// recorder is a notifier that keeps the alert ids it is given; with hang set
// it delivers nothing and waits for its context instead.
type recorder struct {
	hang bool
	mu   sync.Mutex
	ids  []string
}

func (r *recorder) Name() string { return "recorder" }
func (r *recorder) Notify(ctx context.Context, a alert.Alert) error {
	if r.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, a.ID+"#"+string(a.State))
	return nil
}
func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

// TestAlertsNotDeliveredBeforeACrashAreDeliveredAfter: the notifiers read the
// alerts from the log with cursors of their own, so an alert written but not
// delivered when the machine dies is delivered after the restart, even when a
// checkpoint written after it means the processor does not replay it; an
// alert delivered before is not delivered again.
func TestAlertsNotDeliveredBeforeACrashAreDeliveredAfter(t *testing.T) {
	fs := vfs.NewMem()
	run := func(rec *recorder, events []event.Event) (*node, *alert.Dispatcher) {
		l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: fs})
		require.NoError(t, err)
		st, err := store.Open(l, store.Options{})
		require.NoError(t, err)
		p, err := New(st, Options{
			Window:      window.Options{Sizes: []time.Duration{time.Second}},
			Rules:       []alert.Rule{{Name: "hot", Stream: "temp", Op: ">", Threshold: 90, Severity: alert.Critical}},
			Workers:     2,
			IdleTimeout: time.Hour,
			Checkpoints: CheckpointOptions{FS: fs, Dir: "/d/checkpoints", Interval: time.Hour},
		})
		require.NoError(t, err)
		from, ok := p.StartOffset()
		if !ok {
			from = l.DurableOffset()
		}
		d := alert.NewDispatcher(alert.DispatcherOptions{Log: l, From: from, Primary: []alert.Notifier{rec}})
		d.Start()
		p.Start()
		n := &node{fs: fs, log: l, st: st, proc: p}
		if len(events) > 0 {
			_, err := st.Append(context.Background(), events)
			require.NoError(t, err)
		}
		n.caughtUp(t)
		return n, d
	}
	stop := func(n *node, d *alert.Dispatcher) {
		n.proc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		d.Close(ctx)
		n.log.Close()
	}
	hot := func(device string, ts int64) []event.Event {
		return []event.Event{{DeviceID: device, Stream: "temp", TS: ts, Value: 95}, {DeviceID: device, Stream: "temp", TS: ts + 1, Value: 20}}
	}
	waitNotified := func(rec *recorder, n int) []string {
		deadline := time.Now().Add(5 * time.Second)
		for len(rec.got()) < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // and nothing more
		return rec.got()
	}

	// Run 1: d1 fires and resolves, delivered; a clean stop.
	rec := &recorder{}
	n, d := run(rec, hot("d1", t0))
	require.Len(t, waitNotified(rec, 2), 2)
	stop(n, d)

	// Run 2: d2 fires and resolves; the notifier is down. A clean stop writes
	// a checkpoint after d2's alerts, then the machine dies.
	n, d = run(&recorder{hang: true}, hot("d2", t0+1000))
	stop(n, d)
	fs.Crash(nil)

	// Run 3 resumes after d2 and replays nothing, yet d2's alerts are
	// delivered, and d1's not again.
	rec = &recorder{}
	n, d = run(rec, nil)
	defer stop(n, d)
	got := waitNotified(rec, 2)
	require.Len(t, got, 2, "%v", got)
	for _, id := range got {
		require.Contains(t, id, "hot/d2/", "only the alerts not delivered before")
	}
	require.Equal(t, uint64(0), n.proc.Status().ReplayMismatches)
}
