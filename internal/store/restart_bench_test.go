package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// BenchmarkRestart measures a restart over a full default buffer (1 GiB in
// 16 MiB segments, about 17 M small events from 1 000 devices), received
// either in the last 9 minutes (recent: the whole log is in the default
// 10-minute window, the de-duplication set is full) or an hour before
// (old: the set is empty): opening the log and then the store, three ways,
// in the same run:
//
//   - full: no seals and no index file, as before issue 16 (the open then
//     writes the seals, which it is charged for);
//   - clean: after a clean stop, seals and an index file at the log's end;
//   - kill: after a SIGKILL, the index file 400 000 records behind the end.
//
// It reports seconds per restart for each, and the log's and store's part.
// Building the log takes a minute or two; run it with -benchtime=1x or 3x.
func BenchmarkRestart(b *testing.B) {
	b.Run("recent", func(b *testing.B) { benchRestart(b, 9*time.Minute) })
	b.Run("old", func(b *testing.B) { benchRestart(b, 70*time.Minute) })
}

func benchRestart(b *testing.B, age time.Duration) {
	dir := b.TempDir()
	logDir := filepath.Join(dir, "log")
	clean, kill := filepath.Join(dir, "store-index"), filepath.Join(dir, "store-index.kill")
	const tail = 400_000
	opts := buffer.Options{Dir: logDir} // the defaults: 16 MiB segments, 1 GiB
	l, err := buffer.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	// Received at 33 000 events a second over 9 minutes from age ago.
	recent := time.Now().Add(-age).UnixMilli()
	i := 0
	appendN := func(n int) {
		ps := make([][]byte, 0, 10_000)
		for range n {
			e := event.Event{DeviceID: fmt.Sprintf("sensor-%04d", i%1000), Stream: "temperature",
				TS: recent + int64(i/33), Received: recent + int64(i/33), Value: float64(i % 97)}
			ps = append(ps, e.AppendBinary(nil))
			i++
			if len(ps) == cap(ps) {
				if _, err := l.Append(ps...); err != nil {
					b.Fatal(err)
				}
				ps = ps[:0]
			}
		}
		if _, err := l.Append(ps...); err != nil {
			b.Fatal(err)
		}
	}
	// Fill the log to 1 GiB less the tail's bytes, take the index file a
	// SIGKILL would leave, then append the tail and stop cleanly.
	for l.Stats().Bytes < opts.WithDefaults().MaxBytes-int64(tail)*64 {
		appendN(100_000)
	}
	s, err := Open(l, Options{SnapshotPath: kill})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	appendN(tail)
	s, err = Open(l, Options{SnapshotPath: clean})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	st := l.Stats()
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("log: %d records, %d bytes, %d segments", st.NextOffset-st.FirstOffset, st.Bytes, st.Segments)

	restart := func(path string, unseal bool) (logTook, storeTook time.Duration) {
		if unseal {
			names, _ := os.ReadDir(logDir)
			for _, n := range names {
				if strings.HasSuffix(n.Name(), ".seal") {
					os.Remove(filepath.Join(logDir, n.Name()))
				}
			}
		}
		t0 := time.Now()
		l, err := buffer.Open(opts)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		t1 := time.Now()
		if _, err := Open(l, Options{SnapshotPath: path}); err != nil {
			b.Fatal(err)
		}
		return t1.Sub(t0), time.Since(t1)
	}
	var took [3][2]time.Duration
	b.ResetTimer()
	for range b.N {
		for k, run := range []struct {
			path   string
			unseal bool
		}{{"", true}, {clean, false}, {kill, false}} {
			lt, stt := restart(run.path, run.unseal)
			took[k][0] += lt
			took[k][1] += stt
		}
	}
	for k, name := range []string{"full", "clean", "kill"} {
		per := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
		b.ReportMetric(per(took[k][0]+took[k][1]), name+"-s")
		b.ReportMetric(per(took[k][0]), name+"-log-s")
		b.ReportMetric(per(took[k][1]), name+"-store-s")
	}
}
