package process

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
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
