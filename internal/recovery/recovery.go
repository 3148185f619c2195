// Package recovery rebuilds a lost node from the cloud: `holdfast recover
// --from-cloud`. It takes the node's config version in force at the chosen
// time from the config registry, its nearest state snapshot before that time
// from the object store, and every record the cloud holds for the node
// (events, window results, alerts, watermarks, late marks) from JetStream, and
// writes them into a new data directory at the offsets the node gave them —
// holes where the cloud holds nothing — so that the snapshot, late marks and
// sync positions keep their meaning. Then it replays the log from the snapshot
// with the node's own processing and validates the result: the events per
// stream equal the cloud's, and every window result and alert the replay
// produces again equals, byte for byte, the one the node had synced.
//
// Memory does not grow with the node's history: the cloud hands out the
// records in offset order only per subject and lane, so they pass through an
// external merge sort (sort.go, the standard library only) that keeps at most
// Options.SortMemory of them in memory and the rest in sorted runs on disk
// under the new data dir; the replay's store keeps no query index or
// de-duplication set (holdfast run builds them).
//
// nats.go reads the cloud (an ordered consumer per stream, the KV registry
// through internal/cloud, the object store); schollz/progressbar shows progress.
package recovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/node"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/secret"
	"github.com/holdfast-edge/holdfast/internal/store"
)

// Options say what to recover and where to.
type Options struct {
	CloudURL string
	// Access are the credentials and TLS settings for the cloud.
	Access cloud.Access
	NodeID string
	// At is the point to restore; zero restores everything the cloud holds.
	At      time.Time
	DataDir string // must not exist or be empty
	Logger  *slog.Logger
	// Progress receives progress bars; nil shows none.
	Progress io.Writer
	// SortMemory bounds the bytes of records held in memory while they are
	// put in offset order (payloads and 16 bytes each); beyond it they wait
	// in sorted runs under DataDir. 0: DefaultSortMemory.
	SortMemory int
}

// Report is what a recovery found and did.
type Report struct {
	NodeID         string    `json:"node_id"`
	DataDir        string    `json:"data_dir"`
	At             time.Time `json:"at,omitzero"`
	ConfigRevision uint64    `json:"config_revision"` // 0: none in the registry, defaults used
	ConfigTime     time.Time `json:"config_time,omitzero"`
	// Redacted are the config's keys whose secrets the registry does not
	// hold: holdfast.yaml has config.RedactedMarker there, and `holdfast run`
	// refuses it until each is supplied again.
	Redacted       []string       `json:"redacted,omitempty"`
	Snapshot       string         `json:"snapshot,omitempty"` // "": none used, the replay started at 0
	SnapshotOffset uint64         `json:"snapshot_offset"`
	Cut            uint64         `json:"cut"` // records below this offset were restored
	Records        map[string]int `json:"records"`
	Holes          int            `json:"holes"`
	Events         map[string]int `json:"events_per_stream"`
	// PeakRecordsHeld is the most records recovery held in memory at once
	// while putting them in offset order; SortRuns how many sorted runs it
	// wrote to disk to stay within Options.SortMemory.
	PeakRecordsHeld int `json:"peak_records_held"`
	SortRuns        int `json:"sort_runs"`
	// ReplayVerified: results the replay produced again equal to the synced ones.
	ReplayVerified   uint64        `json:"replay_verified"`
	ReplayMismatches uint64        `json:"replay_mismatches"`
	Problems         []string      `json:"problems,omitempty"`
	Notes            []string      `json:"notes,omitempty"`
	Took             time.Duration `json:"took_ns"`
	RecordsPerSecond float64       `json:"records_per_second"`
}

// OK reports whether the validation passed.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Recover rebuilds node o.NodeID into o.DataDir. It returns a report, and an
// error only when it could not finish; a finished recovery whose validation
// failed returns a report with Problems.
func Recover(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if entries, err := os.ReadDir(o.DataDir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("data dir %s is not empty: recover writes a new node", o.DataDir)
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(o.CloudURL, append([]nats.Option{
		nats.Name("holdfast recover " + o.NodeID), nats.Timeout(10 * time.Second),
	}, o.Access.Options()...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to the cloud at %s: %w", secret.RedactURL(o.CloudURL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	rep := &Report{NodeID: o.NodeID, DataDir: o.DataDir, At: o.At, Records: map[string]int{}, Events: map[string]int{}}

	cfg, err := restoreConfig(ctx, js, o, rep)
	if err != nil {
		return nil, err
	}
	// The records wait in a sorter under the new data dir, on disk beyond
	// o.SortMemory, until they can be written in offset order.
	sorted := newSorter(filepath.Join(o.DataDir, ".recover-sort"), cmp.Or(o.SortMemory, DefaultSortMemory))
	defer sorted.remove()
	seqs, err := fetchRecords(ctx, js, o, sorted, rep)
	if err != nil {
		return nil, err
	}
	cloudEvents := map[string]int{}
	if err := restoreSnapshot(ctx, js, o, cfg, rep); err != nil {
		return nil, err
	}
	if err := writeLog(o, cfg, sorted, seqs, rep, cloudEvents); err != nil {
		return nil, err
	}
	rep.PeakRecordsHeld, rep.SortRuns = sorted.peak, len(sorted.runs)
	if err := sorted.remove(); err != nil { // and lets go of its memory
		return nil, err
	}
	if err := replay(ctx, o, cfg, rep); err != nil {
		return nil, err
	}
	// The rebuilt log is read back after the replay: this checks the write
	// path, the engine and that processing appended nothing below the cut.
	if !maps.Equal(rep.Events, cloudEvents) {
		rep.Problems = append(rep.Problems, fmt.Sprintf("events per stream: the cloud holds %v, the rebuilt log %v", cloudEvents, rep.Events))
	}
	if rep.ReplayMismatches > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d window results or alerts replayed differently from the synced ones", rep.ReplayMismatches))
	}
	rep.Took = time.Since(start)
	rep.RecordsPerSecond = float64(rep.Cut) / rep.Took.Seconds()
	return rep, nil
}

// restoreConfig writes the config version in force at o.At, with the node id
// and data dir of the recovery, to <data_dir>/holdfast.yaml.
func restoreConfig(ctx context.Context, js jetstream.JetStream, o Options, rep *Report) (config.Config, error) {
	cfg := config.Default()
	v, err := cloud.ConfigAt(ctx, js, o.NodeID, o.At)
	switch {
	case errors.Is(err, cloud.ErrNotFound):
		o.Logger.Warn("no config in the registry for this node; using the defaults")
	case err != nil:
		return cfg, fmt.Errorf("config registry: %w", err)
	default:
		if cfg, err = config.Parse(v.YAML); err != nil {
			return cfg, fmt.Errorf("config revision %d: %w", v.Revision, err)
		}
		rep.ConfigRevision, rep.ConfigTime = v.Revision, v.Time
	}
	cfg.NodeID, cfg.DataDir = o.NodeID, o.DataDir
	// A config from an older node may hold secrets in plain text: they are
	// not written out again. They are to be supplied like the others.
	cfg = config.Redacted(cfg)
	rep.Redacted = config.RedactedKeys(cfg)
	data, err := config.Marshal(cfg)
	if err != nil {
		return cfg, err
	}
	if len(rep.Redacted) > 0 {
		data = append([]byte(redactedHeader(rep.Redacted)), data...)
	}
	return cfg, os.WriteFile(filepath.Join(o.DataDir, "holdfast.yaml"), data, 0o600)
}

// redactedHeader is the comment holdfast.yaml opens with when its secrets
// must be supplied again.
func redactedHeader(keys []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# holdfast recover: the cloud's config registry holds no secrets. Replace each\n")
	fmt.Fprintf(&b, "# %s below before `holdfast run` (which refuses it until then):\n", config.RedactedMarker)
	for _, k := range keys {
		fmt.Fprintf(&b, "#   %s\n", k)
	}
	return b.String()
}

// fetchRecords reads every record the cloud holds for the node into sorted,
// sets rep.Cut, and returns the stream sequence of the node's last message in
// each stream. JetStream hands out at most fetchBatch messages at a time, each
// at most a 512 KiB batch body (docs/format/cloud.md).
func fetchRecords(ctx context.Context, js jetstream.JetStream, o Options, sorted *sorter, rep *Report) (map[string]uint64, error) {
	seqs := map[string]uint64{}
	// The cut: everything, or, for a point in time, up to the first event
	// the node received after it.
	end, firstAfter := uint64(0), uint64(math.MaxUint64)
	limit := o.At.UnixMilli()
	for _, name := range []string{cloud.StreamEvents, cloud.StreamResults, cloud.StreamLedger} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{cloud.NodeFilter(o.NodeID)}})
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		bar := newBar(o.Progress, int64(info.NumPending), "fetching "+name)
		for left := info.NumPending; left > 0; {
			batch, err := cons.Fetch(int(min(left, fetchBatch)), jetstream.FetchMaxWait(10*time.Second))
			if err != nil {
				return nil, fmt.Errorf("stream %s: %w", name, err)
			}
			n := 0
			for m := range batch.Messages() {
				n++
				meta, err := m.Metadata()
				if err != nil {
					return nil, err
				}
				seqs[name] = meta.Sequence.Stream
				rs, err := cloud.DecodeBatch(m.Headers(), m.Data())
				if err != nil {
					return nil, fmt.Errorf("stream %s message %d: %w", name, meta.Sequence.Stream, err)
				}
				for _, r := range rs {
					end = max(end, r.Offset+1)
					if !o.At.IsZero() && r.Offset < firstAfter {
						if v, ok := event.Peek(r.Payload); ok && v.Received > limit {
							firstAfter = r.Offset
						}
					}
					if err := sorted.add(r.Offset, r.Payload); err != nil {
						return nil, err
					}
				}
			}
			if err := batch.Error(); err != nil {
				return nil, fmt.Errorf("stream %s: %w", name, err)
			}
			if n == 0 {
				return nil, fmt.Errorf("stream %s: no messages within 10s with %d still to read", name, left)
			}
			left -= uint64(n)
			_ = bar.Add(n)
		}
		_ = bar.Finish()
	}
	rep.Cut = min(end, firstAfter)
	return seqs, nil
}

// fetchBatch is how many messages recover asks JetStream for at a time.
const fetchBatch = 64

// restoreSnapshot installs the newest snapshot taken at or before o.At whose
// offset is within the restored records, as the data dir's checkpoint.
func restoreSnapshot(ctx context.Context, js jetstream.JetStream, o Options, cfg config.Config, rep *Report) error {
	list, err := cloud.ListSnapshots(ctx, js, o.NodeID)
	if err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	for i := len(list) - 1; i >= 0; i-- {
		info := list[i]
		if !o.At.IsZero() && info.Time.After(o.At) {
			continue
		}
		_, data, err := cloud.SnapshotAt(ctx, js, o.NodeID, info.Time)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", info.Name, err)
		}
		c, err := process.DecodeCheckpoint(data)
		if err != nil {
			o.Logger.Warn("snapshot unusable; trying an older one", "snapshot", info.Name, "err", err)
			continue
		}
		if c.Offset > rep.Cut {
			continue
		}
		dir := node.ProcessOptions(cfg).Checkpoints.Dir
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.ckpt", c.Offset)), data, 0o600); err != nil {
			return err
		}
		rep.Snapshot, rep.SnapshotOffset = info.Name, c.Offset
		return nil
	}
	o.Logger.Warn("no usable snapshot before the recovery point; replaying from the first record")
	return nil
}

// writeLog writes records 0 to rep.Cut-1 into the new log, in offset order
// from sorted, a hole for every offset the cloud does not hold, and sets
// every sync cursor past them: the cloud holds them already. It counts the
// records per kind and the events per stream the cloud holds below the cut.
func writeLog(o Options, cfg config.Config, sorted *sorter, seqs map[string]uint64, rep *Report, cloudEvents map[string]int) error {
	l, err := node.OpenBuffer(cfg, buffer.Options{
		SegmentBytes: int64(cfg.Buffer.SegmentBytes),
		MaxBytes:     max(int64(cfg.Buffer.MaxBytes), 1<<40), // nothing restored may be deleted while writing
	})
	if err != nil {
		return err
	}
	defer l.Close()
	bar := newBar(o.Progress, int64(rep.Cut), "writing the log")
	hole := []byte{event.TypeHole}
	// The records go to the log in chunks of up to 4096, copied into data.
	chunk := make([][]byte, 0, 4096)
	var data []byte
	next := uint64(0) // the offset the log gives the next record
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		want := next - uint64(len(chunk))
		first, err := l.Append(chunk...)
		if err != nil {
			return err
		}
		if first != want {
			return fmt.Errorf("the new log gave offset %d to record %d", first, want)
		}
		_ = bar.Add(len(chunk))
		chunk, data = chunk[:0], data[:0]
		return nil
	}
	put := func(p []byte) error {
		if len(chunk) == cap(chunk) || len(data)+len(p) > cap(data) {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(p) > cap(data) {
			data = make([]byte, 0, max(4<<20, len(p)))
		}
		data = append(data, p...)
		chunk = append(chunk, data[len(data)-len(p):])
		next++
		return nil
	}
	err = sorted.merge(func(off uint64, p []byte) error {
		if off >= rep.Cut {
			return errStop
		}
		for next < off {
			rep.Holes++
			if err := put(hole); err != nil {
				return err
			}
		}
		rep.Records[kindName(event.Type(p))]++
		if v, ok := event.Peek(p); ok {
			cloudEvents[string(v.Stream)]++
		}
		return put(p)
	})
	if err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	_ = bar.Finish()
	// Every sink a node may have starts after the records the cloud holds:
	// the JetStream sink with its stream sequences, HTTP and MQTT too (their
	// receivers got the records from the lost node).
	cursors := map[string]uint64{}
	for _, sink := range []string{"cloud", "http", "mqtt"} {
		for _, lane := range config.Priorities {
			cursors["sync:"+sink+":"+lane] = rep.Cut
		}
	}
	for stream, seq := range seqs {
		cursors[buffer.ValuePrefix+"sync:cloud:"+stream] = seq
	}
	// The alert notifiers start after them too, not at the checkpoint the
	// replay leaves, which is past the alerts it writes anew: the lost node
	// may never have delivered those (docs/format/notify.md).
	cursors[alert.StartCursor] = rep.Cut
	return l.CommitCursors(cursors)
}

// replay runs the node's processing over the rebuilt log, from the snapshot,
// until it has caught up, and counts the events per stream.
func replay(ctx context.Context, o Options, cfg config.Config, rep *Report) error {
	l, err := node.OpenBuffer(cfg, buffer.Options{SegmentBytes: int64(cfg.Buffer.SegmentBytes),
		MaxBytes: max(int64(cfg.Buffer.MaxBytes), 1<<40)})
	if err != nil {
		return err
	}
	defer l.Close()
	// The replay only appends the processor's outputs: the store's query
	// index and de-duplication set, which grow with the log, are left to
	// `holdfast run`, which builds them when it opens the rebuilt log.
	st, err := store.Open(l, store.Options{OutputsOnly: true})
	if err != nil {
		return err
	}
	if cfg.Windows.Enabled {
		opts := node.ProcessOptions(cfg)
		opts.Logger = o.Logger
		p, err := process.New(st, opts)
		if err != nil {
			return err
		}
		p.Start()
		if off, ok := p.StartOffset(); rep.Snapshot != "" && (!ok || off != rep.SnapshotOffset) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("snapshot %s was not usable (see the log); replayed from the first record", rep.Snapshot))
			rep.Snapshot, rep.SnapshotOffset = "", 0
		}
		bar := newBar(o.Progress, int64(rep.Cut-rep.SnapshotOffset), "replaying")
		for {
			s := p.Status()
			_ = bar.Set64(int64(min(s.Processed, rep.Cut) - min(s.Processed, rep.SnapshotOffset)))
			if !s.Replaying && s.Lag == 0 {
				break
			}
			select {
			case <-ctx.Done():
				p.Close()
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		_ = bar.Finish()
		p.Close() // writes what the replay produced anew, and a checkpoint
		s := p.Status()
		rep.ReplayVerified, rep.ReplayMismatches = s.ReplayVerified, s.ReplayMismatches
	}
	r := l.NewReader(0)
	defer r.Close()
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if off >= rep.Cut {
			return nil
		}
		if v, ok := event.Peek(p); ok {
			rep.Events[string(v.Stream)]++
		}
	}
}

func kindName(t byte) string {
	switch t {
	case event.TypeEvent:
		return "events"
	case event.TypeWindow:
		return "windows"
	case event.TypeAlert:
		return "alerts"
	case event.TypeWatermark:
		return "watermarks"
	case event.TypeLate:
		return "late_marks"
	case event.TypeLedger:
		return "ledger"
	}
	return fmt.Sprintf("type_%02x", t)
}

func newBar(w io.Writer, total int64, what string) *progressbar.ProgressBar {
	if w == nil {
		w = io.Discard
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
}
