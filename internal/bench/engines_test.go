package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

func openTestLog(dir string) (buffer.Engine, error) {
	l, err := buffer.Open(buffer.Options{Dir: dir, SegmentBytes: 256 << 10, MaxBytes: 1 << 40})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func TestBenchEnginesLog(t *testing.T) {
	dir := t.TempDir()
	var progress bytes.Buffer
	o := EngineBenchOptions{
		Engines:   map[string]EngineOpener{"log": openTestLog, "log2": openTestLog},
		Records:   10_007, // not a multiple of the batch
		Appenders: 8,
		Batch:     16,
		Repeat:    2,
		Dir:       dir,
		Progress:  &progress,
	}
	results, err := BenchEngines(context.Background(), o)
	require.NoError(t, err)
	require.Len(t, results, 4)

	// Every other run in reverse order.
	var order []string
	for _, r := range results {
		order = append(order, r.Engine)
	}
	assert.Equal(t, []string{"log", "log2", "log2", "log"}, order)
	assert.Equal(t, []int{1, 1, 2, 2}, []int{results[0].Run, results[1].Run, results[2].Run, results[3].Run})

	for _, r := range results {
		assert.Equal(t, 10_007, r.Records)
		assert.Equal(t, DefaultEnginePayload, r.PayloadBytes)
		assert.Positive(t, r.AppendPerSec, r.Engine)
		assert.Positive(t, r.ReadPerSec, r.Engine)
		assert.Positive(t, r.Restart, r.Engine)
		assert.Less(t, r.Restart, 10*time.Second)
		// A 16-byte frame per record plus segment headers.
		assert.GreaterOrEqual(t, r.DiskBytesPerRecord, float64(DefaultEnginePayload+16))
		assert.Less(t, r.DiskBytesPerRecord, float64(DefaultEnginePayload+16+4))
		assert.Equal(t, r.DiskBytesPerRecord, float64(r.DiskBytes)/float64(r.Records))
	}
	assert.Contains(t, progress.String(), "log (run 2/2):   append")

	// Each engine's directory is removed once measured.
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, left)

	var text bytes.Buffer
	require.NoError(t, WriteEnginesText(&text, results, SeedStorageTiers))
	out := text.String()
	assert.Contains(t, out, "10,007 records of 60 bytes")
	assert.Contains(t, out, "log2")
	assert.Contains(t, out, " med ")
	assert.Contains(t, out, "SQLite WAL 5–10K, RocksDB/LSM 50–100K, log 200K+")
}

// lossyEngine loses record 5 when read.
type lossyEngine struct{ buffer.Engine }

type lossyReader struct{ buffer.RecordReader }

func (e lossyEngine) NewReader(from uint64) buffer.RecordReader {
	return lossyReader{e.Engine.NewReader(from)}
}

func (r lossyReader) Next() (uint64, []byte, error) {
	off, p, err := r.RecordReader.Next()
	if err == nil && off == 5 {
		return r.RecordReader.Next()
	}
	return off, p, err
}

func TestBenchEnginesCatchesLostRecords(t *testing.T) {
	lossy := func(dir string) (buffer.Engine, error) {
		e, err := openTestLog(dir)
		if err != nil {
			return nil, err
		}
		return lossyEngine{e}, nil
	}
	results, err := BenchEngines(context.Background(), EngineBenchOptions{
		Engines: map[string]EngineOpener{"lossy": lossy},
		Records: 100, Appenders: 2, Batch: 3, Dir: t.TempDir(),
	})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "engine lossy, run 1: read: record 5: offset 6")
	assert.Empty(t, results)
}

func TestBenchEnginesOpenError(t *testing.T) {
	broken := func(string) (buffer.Engine, error) { return nil, errors.New("no such engine here") }
	_, err := BenchEngines(context.Background(), EngineBenchOptions{
		Engines: map[string]EngineOpener{"broken": broken}, Records: 10, Dir: t.TempDir(),
	})
	require.ErrorContains(t, err, "engine broken, run 1: open: no such engine here")
}

func TestBenchEnginesCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := BenchEngines(ctx, EngineBenchOptions{
		Engines: map[string]EngineOpener{"log": openTestLog}, Records: 1000, Dir: t.TempDir(),
	})
	require.ErrorIs(t, err, context.Canceled)
}

func TestEngineBenchValidate(t *testing.T) {
	o := EngineBenchOptions{
		Engines: map[string]EngineOpener{"log": openTestLog},
		Order:   []string{"log", "rocks"},
		Records: -1, Appenders: -2, Batch: 0, PayloadBytes: buffer.MaxRecordSize + 1,
	}.withDefaults()
	err := o.Validate()
	require.Error(t, err)
	for _, want := range []string{`no opener for "rocks"`, "--records", "--appenders", "--payload-bytes"} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotContains(t, err.Error(), "--batch") // 0 took the default
	assert.Error(t, EngineBenchOptions{}.withDefaults().Validate())
}

func TestEnginePayloads(t *testing.T) {
	for _, size := range []int{1, 20, 45, 46, 47, 60, 180, 1000} {
		pool := enginePayloads(size)
		require.Len(t, pool, enginePoolSize)
		seen := map[string]bool{}
		for _, p := range pool[:5000] {
			require.Len(t, p, size)
			seen[string(p)] = true
		}
		if size >= 46 {
			assert.Len(t, seen, 5000, "size %d: payloads repeat", size)
		}
	}
	// At the default size every payload is a valid event record.
	for _, p := range enginePayloads(DefaultEnginePayload)[:2000] {
		ev, err := event.DecodeBinary(p)
		require.NoError(t, err)
		assert.Equal(t, benchStream, ev.Stream)
		assert.Len(t, ev.ID, 14)
	}
}

func sampleResults() []EngineResult {
	mk := func(engine string, run int, app, read float64, restart time.Duration, bpr float64) EngineResult {
		return EngineResult{Engine: engine, Run: run, Records: 1_000_000, PayloadBytes: 60, Appenders: 64, Batch: 16,
			AppendPerSec: app, ReadPerSec: read, Restart: restart, DiskBytesPerRecord: bpr, DiskBytes: int64(bpr * 1e6)}
	}
	return []EngineResult{
		mk("log", 1, 1_234_567, 9_800_000, 42*time.Millisecond, 76.1),
		mk("sqlite", 1, 8_200, 1_100_000, 310*time.Millisecond, 112.4),
		mk("pebble", 1, 91_000, 2_500_000, 95*time.Millisecond, 48.3),
		mk("pebble", 2, 88_500, 2_400_000, 101*time.Millisecond, 48.3),
		mk("a<b&c", 1, 0, 0, 0, 0), // escaped, and a zero does not break the scale
	}
}

func TestEnginesSVGWellFormed(t *testing.T) {
	for name, results := range map[string][]EngineResult{
		"sample": sampleResults(),
		"one":    sampleResults()[:1],
		"none":   nil,
	} {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			require.NoError(t, EnginesSVG(&b, results, SeedStorageTiers))
			svg := b.String()

			dec := xml.NewDecoder(strings.NewReader(svg))
			dec.Strict = true
			var root string
			var texts []string
			depth := 0
			for {
				tok, err := dec.Token()
				if err == io.EOF {
					break
				}
				require.NoError(t, err, svg)
				switch tok := tok.(type) {
				case xml.StartElement:
					if depth == 0 {
						root = tok.Name.Local
						assert.Equal(t, "http://www.w3.org/2000/svg", tok.Name.Space)
					}
					depth++
				case xml.EndElement:
					depth--
				case xml.CharData:
					texts = append(texts, string(tok))
				}
			}
			assert.Equal(t, "svg", root)
			assert.Zero(t, depth)
			all := strings.Join(texts, "\n")
			for _, r := range results {
				assert.Contains(t, all, r.Engine)
			}
			for _, ref := range SeedStorageTiers {
				assert.Contains(t, all, ref.Label)
			}
			if name == "sample" {
				for _, want := range []string{"1.23M/s", "8.2K/s", "pebble #2", "42.00ms", "48.3 B", "5–10K", "200K+"} {
					assert.Contains(t, all, want)
				}
			}
		})
	}
}
