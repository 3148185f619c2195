package bench

// `holdfast bench engines`: the storage engines behind buffer.Engine compared
// in one process on one machine — durable append, read, restart to ready and
// disk bytes per record.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// EngineOpener opens (creating or recovering) an engine in dir.
type EngineOpener func(dir string) (buffer.Engine, error)

// EngineBenchOptions configure BenchEngines. Zero fields take the defaults.
type EngineBenchOptions struct {
	Engines map[string]EngineOpener // name → opener; required
	// Order is the order the engines run in (default: Engines' names
	// sorted). With Repeat > 1 every other run goes in reverse order, so no
	// engine always runs first or last.
	Order []string

	Records      int // records appended per engine and run (default 1 000 000)
	PayloadBytes int // bytes per record (default 60, an event record with its id)

	// Appenders goroutines append concurrently, each Batch records per
	// Append call (defaults 64 and 16). Group commit needs concurrency: an
	// Append returns only once fsync'd, so one appender measures the fsync
	// latency (≈ 4 K records/s here), not the engine. Ingest has that
	// concurrency — HTTP connections sending batches, MQTT devices with a
	// message each in flight — and 64 × 16 sits between the two: up to 1 024
	// records wait for each fsync, which is what an engine's group commit can
	// gather.
	Appenders int
	Batch     int

	Repeat int // runs of every engine (default 1)

	// Dir holds a fresh directory per engine and run, removed after it is
	// measured (default: the system's temporary directory). Put it on the
	// disk to measure; on tmpfs fsync costs nothing.
	Dir string

	Progress io.Writer // one line per phase (nil: none)
}

// Defaults of EngineBenchOptions.
const (
	DefaultEngineRecords   = 1_000_000
	DefaultEnginePayload   = 60
	DefaultEngineAppenders = 64
	DefaultEngineBatch     = 16
)

func (o EngineBenchOptions) withDefaults() EngineBenchOptions {
	if o.Records == 0 {
		o.Records = DefaultEngineRecords
	}
	if o.PayloadBytes == 0 {
		o.PayloadBytes = DefaultEnginePayload
	}
	if o.Appenders == 0 {
		o.Appenders = DefaultEngineAppenders
	}
	if o.Batch == 0 {
		o.Batch = DefaultEngineBatch
	}
	if o.Repeat == 0 {
		o.Repeat = 1
	}
	if len(o.Order) == 0 {
		for name := range o.Engines {
			o.Order = append(o.Order, name)
		}
		slices.Sort(o.Order)
	}
	return o
}

// Validate reports options that cannot work, naming the flag.
func (o EngineBenchOptions) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(o.Engines) == 0 {
		bad("--engines: no engine to measure")
	}
	for _, name := range o.Order {
		if o.Engines[name] == nil {
			bad("--engines: no opener for %q", name)
		}
	}
	if o.Records < 1 {
		bad("--records: %d must be at least 1", o.Records)
	}
	if o.PayloadBytes < 1 || o.PayloadBytes > buffer.MaxRecordSize {
		bad("--payload-bytes: %d must be from 1 to %d", o.PayloadBytes, buffer.MaxRecordSize)
	}
	if o.Appenders < 1 || o.Appenders > 100_000 {
		bad("--appenders: %d must be from 1 to 100000", o.Appenders)
	}
	if o.Batch < 1 || o.Batch > 100_000 {
		bad("--batch: %d must be from 1 to 100000", o.Batch)
	}
	if o.Repeat < 1 {
		bad("--repeat: %d must be at least 1", o.Repeat)
	}
	return errors.Join(errs...)
}

// EngineResult is one engine's run. Its JSON form is for scripts and is kept
// stable: fields are only ever added.
type EngineResult struct {
	Engine       string `json:"engine"`
	Run          int    `json:"run"` // 1-based
	Records      int    `json:"records"`
	PayloadBytes int    `json:"payload_bytes"`
	Appenders    int    `json:"appenders"`
	Batch        int    `json:"batch"`

	// AppendPerSec is Records over the time from the first Append call to
	// the last one's return; every Append returns once its records are
	// fsync'd.
	AppendPerSec float64 `json:"append_per_s"`
	// ReadPerSec is Records over the time one reader takes from offset 0 to
	// the end, right after the appends (so mostly from the page cache).
	ReadPerSec float64 `json:"read_per_s"`
	// Restart is the time to open the closed engine holding Records and
	// read its first record: the engine's recovery.
	Restart time.Duration `json:"restart_ns"`
	// DiskBytes is the size of the files in the engine's directory after
	// Close, DiskBytesPerRecord that over Records.
	DiskBytes          int64   `json:"disk_bytes"`
	DiskBytesPerRecord float64 `json:"disk_bytes_per_record"`
}

// BenchEngines measures each engine in turn, in this process, each in a
// fresh directory:
//
//  1. durable append: Records appended by Appenders goroutines in batches of
//     Batch → records/s;
//  2. read: one reader from offset 0 to the end → records/s;
//  3. restart to ready: Close, then Open and read the first record;
//  4. disk bytes per record: the directory's files after Close over Records.
//
// Every record read and the offsets after the restart are checked: an engine
// that loses or garbles records is an error, not a fast result. It returns
// the results of every run finished, in the order they ran, with the error
// that stopped it, if any.
func BenchEngines(ctx context.Context, o EngineBenchOptions) ([]EngineResult, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	base := o.Dir
	if base == "" {
		d, err := os.MkdirTemp("", "holdfast-bench-engines-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		base = d
	} else if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	pool := enginePayloads(o.PayloadBytes)

	var results []EngineResult
	for run := 1; run <= o.Repeat; run++ {
		order := slices.Clone(o.Order)
		if run%2 == 0 {
			slices.Reverse(order)
		}
		for _, name := range order {
			if err := ctx.Err(); err != nil {
				return results, err
			}
			dir, err := os.MkdirTemp(base, name+"-")
			if err != nil {
				return results, err
			}
			runtime.GC() // the previous engine's garbage is not this one's to collect
			res, err := benchEngine(ctx, o, name, run, dir, pool)
			if rerr := os.RemoveAll(dir); err == nil {
				err = rerr
			}
			if err != nil {
				return results, fmt.Errorf("engine %s, run %d: %w", name, run, err)
			}
			results = append(results, res)
		}
	}
	return results, nil
}

func (o EngineBenchOptions) notef(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// benchEngine runs the four measurements on one engine in dir.
func benchEngine(ctx context.Context, o EngineBenchOptions, name string, run int, dir string, pool [][]byte) (EngineResult, error) {
	res := EngineResult{Engine: name, Run: run, Records: o.Records, PayloadBytes: o.PayloadBytes, Appenders: o.Appenders, Batch: o.Batch}
	open := o.Engines[name]
	label := fmt.Sprintf("%s (run %d/%d)", name, run, o.Repeat)

	e, err := open(dir)
	if err != nil {
		return res, fmt.Errorf("open: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			e.Close()
		}
	}()
	start := e.NextOffset()

	// 1. Durable append.
	o.notef("%s: appending %s records of %d bytes, %d appenders × %d", label, group(int64(o.Records)), o.PayloadBytes, o.Appenders, o.Batch)
	took, err := appendAll(ctx, e, o, pool)
	if err != nil {
		return res, fmt.Errorf("append: %w", err)
	}
	if got := e.NextOffset() - start; got != uint64(o.Records) {
		return res, fmt.Errorf("append: next offset moved by %d for %d records", got, o.Records)
	}
	res.AppendPerSec = float64(o.Records) / took.Seconds()
	o.notef("%s:   append %s records/s (%.2fs)", label, si(res.AppendPerSec), took.Seconds())

	// 2. Read.
	took, err = readAll(ctx, e, start, o)
	if err != nil {
		return res, fmt.Errorf("read: %w", err)
	}
	res.ReadPerSec = float64(o.Records) / took.Seconds()
	o.notef("%s:   read %s records/s (%.2fs)", label, si(res.ReadPerSec), took.Seconds())

	// 4. Disk bytes, after Close.
	closed = true
	if err := e.Close(); err != nil {
		return res, fmt.Errorf("close: %w", err)
	}
	if res.DiskBytes, err = dirSize(dir); err != nil {
		return res, err
	}
	res.DiskBytesPerRecord = float64(res.DiskBytes) / float64(o.Records)

	// 3. Restart to ready.
	t0 := time.Now()
	e2, err := open(dir)
	if err != nil {
		return res, fmt.Errorf("reopen: %w", err)
	}
	r := e2.NewReader(0)
	off, payload, err := r.Next()
	res.Restart = time.Since(t0)
	switch {
	case err != nil:
		err = fmt.Errorf("first record after reopen: %w", err)
	case off != start || len(payload) != o.PayloadBytes:
		err = fmt.Errorf("first record after reopen: offset %d of %d bytes, want offset %d of %d bytes", off, len(payload), start, o.PayloadBytes)
	case e2.NextOffset() != start+uint64(o.Records):
		err = fmt.Errorf("after reopen the next offset is %d, want %d", e2.NextOffset(), start+uint64(o.Records))
	}
	err = errors.Join(err, r.Close(), e2.Close())
	if err != nil {
		return res, err
	}
	o.notef("%s:   restart to ready %s, %.1f disk bytes/record", label, fmtMs(float64(res.Restart)/1e6), res.DiskBytesPerRecord)
	return res, nil
}

// appendAll appends o.Records records from pool with o.Appenders goroutines
// and returns the time from the first call to the last return.
func appendAll(ctx context.Context, e buffer.Engine, o EngineBenchOptions, pool [][]byte) (time.Duration, error) {
	var (
		next    atomic.Int64 // index of the next record to claim
		stop    atomic.Bool
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
		ready   = make(chan struct{})
	)
	fail := func(err error) {
		errOnce.Do(func() { first = err })
		stop.Store(true)
	}
	total := int64(o.Records)
	for range o.Appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([][]byte, 0, o.Batch)
			<-ready
			for !stop.Load() {
				select {
				case <-ctx.Done():
					fail(ctx.Err())
					return
				default:
				}
				from := next.Add(int64(o.Batch)) - int64(o.Batch)
				if from >= total {
					return
				}
				batch = batch[:0]
				for i := from; i < min(from+int64(o.Batch), total); i++ {
					batch = append(batch, pool[i%int64(len(pool))])
				}
				if _, err := e.Append(batch...); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	t0 := time.Now()
	close(ready)
	wg.Wait()
	took := time.Since(t0)
	if first != nil {
		return took, first
	}
	if err := e.Err(); err != nil {
		return took, err
	}
	if d, n := e.DurableOffset(), e.NextOffset(); d < n {
		return took, fmt.Errorf("durable offset %d below next offset %d after every Append returned", d, n)
	}
	return took, nil
}

// readAll reads every record from offset 0 with one reader, checking that
// they are o.Records consecutive records from start of the right size.
func readAll(ctx context.Context, e buffer.Engine, start uint64, o EngineBenchOptions) (time.Duration, error) {
	t0 := time.Now()
	r := e.NewReader(0)
	defer r.Close()
	want := start
	for n := 0; n < o.Records; n++ {
		off, payload, err := r.Next()
		if err != nil {
			if err == io.EOF {
				err = fmt.Errorf("end of the records after %d of %d", n, o.Records)
			}
			return 0, err
		}
		if off != want || len(payload) != o.PayloadBytes {
			return 0, fmt.Errorf("record %d: offset %d of %d bytes, want offset %d of %d bytes", n, off, len(payload), want, o.PayloadBytes)
		}
		want++
		if n%65536 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	took := time.Since(t0)
	if off, _, err := r.Next(); err != io.EOF {
		return 0, fmt.Errorf("a record past the last appended: offset %d, err %v", off, err)
	}
	return took, nil
}

// dirSize returns the apparent size of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// enginePoolSize is how many distinct payloads the appenders cycle through:
// enough that no engine sees repeats within a block or a page (so compression
// sees event-like data, not copies), few enough to build before timing.
const enginePoolSize = 1 << 16

// enginePayloads builds the records to append: binary event records
// (event.AppendBinary) of 1 000 devices reporting a temperature every second,
// with a device-assigned id sized so each record is size bytes. Engines treat
// payloads as opaque; the content matters only to those that compress.
func enginePayloads(size int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 0, enginePoolSize*size)
	pool := make([][]byte, enginePoolSize)
	const devices = 1000
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).UnixMilli()
	for i := range pool {
		seq := uint64(i / devices)
		ev := event.Event{
			DeviceID: fmt.Sprintf("dev-%06d", i%devices+1),
			Stream:   benchStream,
			TS:       t0 + int64(seq)*1000 + int64(i%devices),
			Value:    reading(i%devices, seq),
		}
		ev.Received = ev.TS + 3 + int64(rng.IntN(20))
		rec := ev.AppendBinary(nil)
		if need := size - len(rec); need >= 2 {
			// An id of up to 127 bytes takes one length byte.
			ev.ID = fmt.Sprintf("%0*x", min(need-1, 127), rng.Uint64())
			ev.ID = ev.ID[len(ev.ID)-min(need-1, 127):]
			rec = ev.AppendBinary(nil)
		}
		for len(rec) < size {
			rec = append(rec, byte(rng.Uint32()))
		}
		start := len(buf)
		buf = append(buf, rec[:size]...)
		pool[i] = buf[start:len(buf):len(buf)]
	}
	return pool
}

// ReferenceRange is an expected append rate, records/s, from Low to High
// (High 0: Low and up).
type ReferenceRange struct {
	Label string  `json:"label"`
	Low   float64 `json:"low_per_s"`
	High  float64 `json:"high_per_s,omitempty"`
}

func (r ReferenceRange) String() string { return r.Label + " " + r.rangeText() }

// rangeText is "5–10K" or "200K+".
func (r ReferenceRange) rangeText() string {
	if r.High == 0 {
		return si(r.Low) + "+"
	}
	lo, hi := si(r.Low), si(r.High)
	if lo[len(lo)-1] == hi[len(hi)-1] && (strings.HasSuffix(lo, "K") || strings.HasSuffix(lo, "M")) {
		lo = lo[:len(lo)-1]
	}
	return lo + "–" + hi
}

// SeedStorageTiers are the write rates the design seed expects of each
// storage tier (seed/05-scalability-and-reliability.md).
var SeedStorageTiers = []ReferenceRange{
	{Label: "SQLite WAL", Low: 5_000, High: 10_000},
	{Label: "RocksDB/LSM", Low: 50_000, High: 100_000},
	{Label: "log", Low: 200_000},
}

// WriteEnginesText writes results as a table for people, one row per run
// and, with several runs of an engine, a median row; then the reference
// rates.
func WriteEnginesText(w io.Writer, results []EngineResult, reference []ReferenceRange) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	if len(results) == 0 {
		p("holdfast bench engines: no results\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	r0 := results[0]
	p("holdfast bench engines: %s records of %d bytes per engine, %d appenders × batches of %d, every Append fsync'd\n\n",
		group(int64(r0.Records)), r0.PayloadBytes, r0.Appenders, r0.Batch)
	p("  %-10s %4s  %14s  %14s  %12s  %10s\n", "engine", "run", "append rec/s", "read rec/s", "restart", "disk B/rec")
	row := func(engine, run string, r EngineResult) {
		p("  %-10s %4s  %14s  %14s  %12s  %10.1f\n", engine, run, group(int64(r.AppendPerSec)), group(int64(r.ReadPerSec)),
			fmtMs(float64(r.Restart)/1e6), r.DiskBytesPerRecord)
	}
	for _, r := range results {
		row(r.Engine, fmt.Sprint(r.Run), r)
	}
	for _, name := range engineNames(results) {
		var runs []EngineResult
		for _, r := range results {
			if r.Engine == name {
				runs = append(runs, r)
			}
		}
		if len(runs) > 1 {
			row(name, "med", medianResult(runs))
		}
	}
	p("\n  append: records/s from the first Append to the last return; read: one reader from offset 0,\n")
	p("  right after the appends; restart: Open plus the first record, with every record in the engine;\n")
	p("  disk: the engine's files after Close, per record\n")
	if len(reference) > 0 {
		refs := make([]string, len(reference))
		for i, r := range reference {
			refs[i] = r.String()
		}
		p("  reference writes/s (design seed): %s\n", strings.Join(refs, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// engineNames returns the engines of results in the order they first appear.
func engineNames(results []EngineResult) []string {
	var names []string
	for _, r := range results {
		if !slices.Contains(names, r.Engine) {
			names = append(names, r.Engine)
		}
	}
	return names
}

// medianResult returns the median of each measurement over runs (the lower
// middle one for an even count).
func medianResult(runs []EngineResult) EngineResult {
	med := func(f func(EngineResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[(len(v)-1)/2]
	}
	m := runs[0]
	m.Run = 0
	m.AppendPerSec = med(func(r EngineResult) float64 { return r.AppendPerSec })
	m.ReadPerSec = med(func(r EngineResult) float64 { return r.ReadPerSec })
	m.Restart = time.Duration(med(func(r EngineResult) float64 { return float64(r.Restart) }))
	m.DiskBytesPerRecord = med(func(r EngineResult) float64 { return r.DiskBytesPerRecord })
	m.DiskBytes = int64(med(func(r EngineResult) float64 { return float64(r.DiskBytes) }))
	return m
}
