package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/secret"
)

// Defaults of Options.
const (
	DefaultInterval = time.Hour
	DefaultKeep     = 24
	// RetryInterval is how often pending uploads, an unpublished config and
	// a failed cloud prune are retried while the cloud cannot be reached.
	RetryInterval = time.Minute
)

const (
	// connectTimeout bounds one attempt to dial the cloud.
	connectTimeout = 2 * time.Second
	// opTimeout bounds each call to the cloud (one upload, one prune, one
	// config put).
	opTimeout = 30 * time.Second
)

// ErrClosed is returned by SnapshotNow after Close.
var ErrClosed = errors.New("backup: closed")

// Options configure a Backup.
type Options struct {
	NodeID string
	// CloudURL is the cloud's NATS URL; "" keeps snapshots local only and
	// publishes no config.
	CloudURL string
	// Access are the credentials and TLS settings for the cloud.
	Access cloud.Access
	// CheckpointDir is where the processor writes its checkpoints;
	// SnapshotDir is where snapshots are kept (created when needed).
	CheckpointDir, SnapshotDir string
	// Interval between snapshots; default DefaultInterval.
	Interval time.Duration
	// Keep is how many snapshots are kept, locally and in the cloud; default
	// DefaultKeep.
	Keep int
	// ConfigYAML is published to the config registry on Start; nil publishes
	// nothing.
	ConfigYAML []byte
	Logger     *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer

	now   func() time.Time // default time.Now
	retry time.Duration    // default RetryInterval
}

// Status is the backup's state for /v1/status.
type Status struct {
	// LastSnapshot is the time of the newest local snapshot — the written_at
	// of the checkpoint it copies — and LastSnapshotBytes its size.
	LastSnapshot      time.Time `json:"last_snapshot,omitzero"`
	LastSnapshotBytes int64     `json:"last_snapshot_bytes"`
	// LastUpload is when a snapshot was last uploaded (by this process).
	LastUpload time.Time `json:"last_upload,omitzero"`
	// PendingUploads counts local snapshots not yet in the cloud; always 0
	// without a cloud.
	PendingUploads int `json:"pending_uploads"`
	// ConfigRevision is the config registry's revision of this node's config
	// once published (0 until then).
	ConfigRevision uint64 `json:"config_revision"`
	// LastError is what currently fails, per area ("snapshot: …; upload: …;
	// config: …"); an area's error clears when it next succeeds.
	LastError string `json:"last_error,omitempty"`
}

// Backup takes snapshots, uploads them and publishes the config. Its methods
// are safe for concurrent use.
type Backup struct {
	o   Options
	log *slog.Logger
	m   *metrics

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lc      sync.Mutex // orders Start against Close
	started bool
	closed  atomic.Bool

	// sem admits one worker at a time — the background loop or SnapshotNow —
	// and guards the fields below it.
	sem        chan struct{}
	nc         *nats.Conn
	js         jetstream.JetStream
	configDone bool
	pruneDue   bool

	mu   sync.Mutex
	st   Status
	errs map[string]string // area → current error
}

// New returns a Backup; Start runs it.
func New(o Options) *Backup {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Keep <= 0 {
		o.Keep = DefaultKeep
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.retry <= 0 {
		o.retry = RetryInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Backup{
		o:        o,
		log:      o.Logger.With("component", "backup"),
		m:        newMetrics(o.Registerer),
		ctx:      ctx,
		cancel:   cancel,
		sem:      make(chan struct{}, 1),
		pruneDue: o.CloudURL != "", // once per start: Keep may have shrunk
		errs:     map[string]string{},
	}
}

// Start reads the snapshot directory into Status and starts the background
// loop: a snapshot at once and every Interval, uploads after each, config
// publication, retries. It returns at once; a second call does nothing.
func (b *Backup) Start() {
	b.lc.Lock()
	defer b.lc.Unlock()
	if b.started || b.closed.Load() {
		return
	}
	b.started = true
	if snaps, err := scanSnapshots(b.o.SnapshotDir); err != nil {
		b.setErr("snapshot", fmt.Errorf("read %s: %w", b.o.SnapshotDir, err))
	} else {
		b.noteLocal(snaps)
	}
	b.wg.Add(1)
	go b.run()
}

// Close stops the loop, abandoning a cloud call in flight, and closes the
// cloud connection. Snapshots not yet uploaded stay pending for the next
// start. It is safe to call more than once.
func (b *Backup) Close() error {
	b.lc.Lock()
	defer b.lc.Unlock()
	if b.closed.Swap(true) {
		return nil
	}
	b.cancel()
	b.wg.Wait()
	b.sem <- struct{}{} // wait for a SnapshotNow in progress
	if b.nc != nil {
		b.nc.Close()
		b.nc, b.js = nil, nil
	}
	<-b.sem
	return nil
}

// SnapshotNow takes a snapshot if there is a new checkpoint and then uploads
// whatever is pending, waiting for both (within ctx). It returns an error
// only if the snapshot could not be taken; an upload that fails leaves the
// snapshot pending, reported in Status and retried by the loop. It works
// before Start too, and returns ErrClosed after Close.
func (b *Backup) SnapshotNow(ctx context.Context) error {
	if b.closed.Load() {
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(b.ctx, cancel)
	defer stop()
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		if b.closed.Load() {
			return ErrClosed
		}
		return ctx.Err()
	}
	defer func() { <-b.sem }()
	if b.closed.Load() {
		return ErrClosed
	}
	return b.cycle(ctx, true)
}

// Status returns the current status.
func (b *Backup) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.st
	var errs []string
	for _, area := range []string{"snapshot", "upload", "config"} {
		if e := b.errs[area]; e != "" {
			errs = append(errs, area+": "+e)
		}
	}
	st.LastError = strings.Join(errs, "; ")
	return st
}

func (b *Backup) run() {
	defer b.wg.Done()
	tick := time.NewTicker(b.o.Interval)
	defer tick.Stop()
	retry := time.NewTimer(b.o.retry)
	defer retry.Stop()
	snap := true
	for {
		select {
		case b.sem <- struct{}{}:
		case <-b.ctx.Done():
			return
		}
		_ = b.cycle(b.ctx, snap)
		due := b.retryDue()
		<-b.sem
		if due {
			retry.Reset(b.o.retry)
		} else {
			retry.Stop()
		}
		select {
		case <-b.ctx.Done():
			return
		case <-tick.C:
			snap = true
		case <-retry.C:
			snap = false
		}
	}
}

// retryDue reports whether cloud work is left over. Called holding sem.
func (b *Backup) retryDue() bool {
	if b.o.CloudURL == "" {
		return false
	}
	b.mu.Lock()
	pending := b.st.PendingUploads
	b.mu.Unlock()
	return pending > 0 || b.pruneDue || (b.o.ConfigYAML != nil && !b.configDone)
}

// cycle takes a snapshot if snap is set, then does the cloud work: config,
// uploads, prune. It returns the snapshot's error. Called holding sem.
func (b *Backup) cycle(ctx context.Context, snap bool) error {
	var snapErr error
	if snap {
		snapErr = b.snapshot()
		b.setErr("snapshot", snapErr)
	}
	snaps, err := retain(b.o.SnapshotDir, b.o.Keep)
	if err != nil {
		b.log.Warn("snapshot retention incomplete", "dir", b.o.SnapshotDir, "err", err)
	}
	b.noteLocal(snaps)
	if b.o.CloudURL == "" {
		return snapErr
	}
	if b.o.ConfigYAML != nil && !b.configDone {
		b.setErr("config", b.publishConfig(ctx))
	}
	b.setErr("upload", b.upload(ctx, snaps))
	if snaps, err := scanSnapshots(b.o.SnapshotDir); err == nil {
		b.noteLocal(snaps)
	}
	return snapErr
}

// snapshot copies the newest valid checkpoint into the snapshot directory,
// unless it is there already.
func (b *Backup) snapshot() error {
	if b.o.CheckpointDir == "" || b.o.SnapshotDir == "" {
		return errors.New("checkpoint and snapshot directories must both be set")
	}
	start := time.Now()
	c, data, file, skipped, err := newestCheckpoint(b.o.CheckpointDir)
	for _, e := range skipped {
		b.log.Warn("checkpoint damaged; snapshotting an older one", "err", e)
	}
	if err != nil {
		b.log.Error("no snapshot taken", "err", err)
		return err
	}
	if c == nil {
		b.log.Debug("no checkpoint to snapshot yet", "dir", b.o.CheckpointDir)
		return nil
	}
	ms := c.WrittenAt.UnixMilli()
	path := filepath.Join(b.o.SnapshotDir, snapName(ms))
	if _, err := os.Stat(path); err == nil {
		b.log.Debug("no new checkpoint since the last snapshot", "file", path)
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	if err := vfs.OS.MkdirAll(b.o.SnapshotDir); err != nil {
		b.log.Error("no snapshot taken", "err", err)
		return fmt.Errorf("snapshot dir: %w", err)
	}
	if err := vfs.WriteAtomic(vfs.OS, path, data); err != nil {
		b.log.Error("no snapshot taken", "file", path, "err", err)
		return fmt.Errorf("write snapshot %s: %w", path, err)
	}
	took := time.Since(start)
	b.m.snapshots.Inc()
	b.m.snapshotBytes.Set(float64(len(data)))
	b.m.snapshotSeconds.Set(took.Seconds())
	b.log.Info("snapshot taken", "file", path, "checkpoint", file, "offset", c.Offset,
		"written_at", c.WrittenAt, "bytes", len(data), "took", took.Round(time.Microsecond))
	return nil
}

// noteLocal updates the status and the pending gauge from the snapshot
// directory's contents.
func (b *Backup) noteLocal(snaps []snapFile) {
	pending := 0
	if b.o.CloudURL != "" {
		for _, s := range snaps {
			if !s.uploaded {
				pending++
			}
		}
	}
	b.m.pending.Set(float64(pending))
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st.PendingUploads = pending
	if n := len(snaps); n > 0 {
		b.st.LastSnapshot = snaps[n-1].time()
		b.st.LastSnapshotBytes = snaps[n-1].size
	}
}

// connect returns the cloud connection, dialling it if there is none. Once
// connected, nats.go reconnects by itself; while it does, calls fail at once.
// Called holding sem.
func (b *Backup) connect() (jetstream.JetStream, error) {
	if b.closed.Load() {
		return nil, ErrClosed // never dial after Close has closed the connection
	}
	if b.nc != nil {
		switch {
		case b.nc.IsConnected():
			return b.js, nil
		case !b.nc.IsClosed():
			return nil, fmt.Errorf("not connected to %s (reconnecting)", secret.RedactURL(b.o.CloudURL))
		}
		b.nc, b.js = nil, nil
	}
	nc, err := nats.Connect(b.o.CloudURL, append([]nats.Option{
		nats.Name("holdfast " + b.o.NodeID + " backup"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1), // fail while disconnected instead of queueing
		nats.Timeout(connectTimeout),
	}, b.o.Access.Options()...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", secret.RedactURL(b.o.CloudURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	b.nc, b.js = nc, js
	b.log.Info("connected to the cloud", "url", secret.RedactURL(b.o.CloudURL))
	return js, nil
}

// publishConfig puts the config into the registry. Called holding sem.
func (b *Backup) publishConfig(ctx context.Context) error {
	js, err := b.connect()
	if err != nil {
		b.log.Warn("config not published; will retry", "err", err)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rev, changed, err := cloud.PutConfig(ctx, js, b.o.NodeID, b.o.ConfigYAML)
	if err != nil {
		b.log.Warn("config not published; will retry", "err", err)
		return err
	}
	b.configDone = true
	b.mu.Lock()
	b.st.ConfigRevision = rev
	b.mu.Unlock()
	if changed {
		b.m.configPublished.Inc()
		b.log.Info("config published", "revision", rev, "bytes", len(b.o.ConfigYAML))
	} else {
		b.log.Info("config unchanged in the registry", "revision", rev)
	}
	return nil
}

// upload sends every pending snapshot to the cloud, oldest first, marking
// each once stored, then prunes the cloud copy to Keep. It stops at the
// first failure. Called holding sem.
func (b *Backup) upload(ctx context.Context, snaps []snapFile) error {
	var pending []snapFile
	for _, s := range snaps {
		if !s.uploaded {
			pending = append(pending, s)
		}
	}
	if len(pending) == 0 && !b.pruneDue {
		return nil
	}
	js, err := b.connect()
	if err != nil {
		if len(pending) > 0 {
			b.m.uploadFailures.Inc()
		}
		b.log.Warn("snapshots not uploaded; will retry", "pending", len(pending), "err", err)
		return err
	}
	for _, s := range pending {
		if err := b.uploadOne(ctx, js, s); err != nil {
			return err
		}
		b.pruneDue = true
	}
	if !b.pruneDue {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	deleted, err := cloud.PruneSnapshots(pctx, js, b.o.NodeID, b.o.Keep)
	if err != nil {
		b.log.Warn("cloud snapshots not pruned; will retry", "err", err)
		return err
	}
	b.pruneDue = false
	if deleted > 0 {
		b.log.Info("old cloud snapshots deleted", "deleted", deleted, "keep", b.o.Keep)
	}
	return nil
}

func (b *Backup) uploadOne(ctx context.Context, js jetstream.JetStream, s snapFile) error {
	path := filepath.Join(b.o.SnapshotDir, snapName(s.ms))
	data, err := vfs.ReadFile(vfs.OS, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // gone to local retention
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := process.DecodeCheckpoint(data); err != nil {
		// Damaged on disk since it was taken: useless to upload or keep.
		b.log.Error("local snapshot damaged; deleted, not uploaded", "file", path, "err", err)
		if err := vfs.OS.Remove(path); err != nil {
			return fmt.Errorf("remove damaged %s: %w", path, err)
		}
		return nil
	}
	start := time.Now()
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := cloud.PutSnapshot(octx, js, b.o.NodeID, s.time(), data); err != nil {
		if ctx.Err() != nil {
			return err // closing: not a failure of the cloud
		}
		b.m.uploadFailures.Inc()
		b.log.Warn("snapshot upload failed; will retry", "file", path, "bytes", len(data),
			"took", time.Since(start).Round(time.Microsecond), "err", err)
		return err
	}
	if err := vfs.WriteAtomic(vfs.OS, path+uploadedExt, nil); err != nil {
		return fmt.Errorf("mark %s uploaded: %w", path, err)
	}
	b.m.uploads.Inc()
	b.mu.Lock()
	b.st.LastUpload = b.o.now()
	b.mu.Unlock()
	b.log.Info("snapshot uploaded", "object", cloud.SnapshotName(b.o.NodeID, s.time()), "bytes", len(data),
		"took", time.Since(start).Round(time.Microsecond))
	return nil
}

// setErr sets (err != nil) or clears an area's current error.
func (b *Backup) setErr(area string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		delete(b.errs, area)
	} else {
		b.errs[area] = err.Error()
	}
}
