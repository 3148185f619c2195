package process

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Checkpoint is the processor's state as of Offset: every record below it is
// processed and what it produced is durable in the log. docs/format/checkpoint.md
// is the file layout.
type Checkpoint struct {
	Offset    uint64
	WrittenAt time.Time
	Options   windowOptions
	Streams   [][]byte // one window.Engine stream state each
	Alerts    alert.EngineState
	History   []alert.Alert // newest state of recent alerts, oldest first

	started time.Time // when the barrier was sent, for the duration metric
}

// windowOptions are the window options a checkpoint's state depends on.
type windowOptions struct {
	SizesMS    []uint64
	LatenessMS int64 // -1: none
	Accuracy   float64
}

func optionsOf(o window.Options) windowOptions {
	w := windowOptions{Accuracy: o.Accuracy}
	switch o.AllowedLateness {
	case window.NoLateness:
		w.LatenessMS = -1
	case 0:
		w.LatenessMS = window.DefaultAllowedLateness.Milliseconds()
	default:
		w.LatenessMS = o.AllowedLateness.Milliseconds()
	}
	sizes := o.Sizes
	if len(sizes) == 0 {
		sizes = window.DefaultSizes
	}
	for _, s := range sizes {
		w.SizesMS = append(w.SizesMS, uint64(s.Milliseconds()))
	}
	slices.Sort(w.SizesMS)
	if w.Accuracy == 0 {
		w.Accuracy = window.DefaultAccuracy
	}
	return w
}

func (a windowOptions) equal(b windowOptions) bool {
	return slices.Equal(a.SizesMS, b.SizesMS) && a.LatenessMS == b.LatenessMS &&
		math.Float64bits(a.Accuracy) == math.Float64bits(b.Accuracy)
}

const (
	checkpointMagic   = "HFCP"
	checkpointVersion = 1
	checkpointExt     = ".ckpt"

	sectionOptions = 1
	sectionStream  = 2
	sectionAlerts  = 3
	sectionHistory = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32Castagnoli(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Encode returns the checkpoint file's bytes.
func (c *Checkpoint) Encode() ([]byte, error) {
	b := make([]byte, 0, 1<<16)
	b = append(b, checkpointMagic...)
	b = append(b, checkpointVersion)
	b = binary.LittleEndian.AppendUint64(b, c.Offset)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.WrittenAt.UnixMilli()))
	section := func(kind byte, body []byte) {
		b = append(b, kind)
		b = binary.AppendUvarint(b, uint64(len(body)))
		b = append(b, body...)
	}
	var opts []byte
	opts = binary.AppendUvarint(opts, uint64(len(c.Options.SizesMS)))
	for _, s := range c.Options.SizesMS {
		opts = binary.AppendUvarint(opts, s)
	}
	opts = binary.AppendVarint(opts, c.Options.LatenessMS)
	opts = binary.LittleEndian.AppendUint64(opts, math.Float64bits(c.Options.Accuracy))
	section(sectionOptions, opts)
	for _, s := range c.Streams {
		section(sectionStream, s)
	}
	alerts, err := json.Marshal(c.Alerts)
	if err != nil {
		return nil, err
	}
	section(sectionAlerts, alerts)
	history, err := json.Marshal(c.History)
	if err != nil {
		return nil, err
	}
	section(sectionHistory, history)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// DecodeCheckpoint reads a checkpoint file's bytes, checking everything
// docs/format/checkpoint.md requires. Stream states are not decoded here: the
// window engines check them when they restore them.
func DecodeCheckpoint(data []byte) (*Checkpoint, error) {
	const head = 4 + 1 + 8 + 8
	if len(data) < head+4 {
		return nil, fmt.Errorf("checkpoint: %d bytes is too short", len(data))
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("checkpoint: checksum %08x, file says %08x", got, sum)
	}
	if string(body[:4]) != checkpointMagic {
		return nil, fmt.Errorf("checkpoint: bad magic %q", body[:4])
	}
	if body[4] != checkpointVersion {
		return nil, fmt.Errorf("checkpoint: version %d, want %d", body[4], checkpointVersion)
	}
	c := &Checkpoint{
		Offset:    binary.LittleEndian.Uint64(body[5:]),
		WrittenAt: time.UnixMilli(int64(binary.LittleEndian.Uint64(body[13:]))),
	}
	seen := map[byte]int{}
	for rest := body[head:]; len(rest) > 0; {
		kind := rest[0]
		n, k := binary.Uvarint(rest[1:])
		if k <= 0 || n > uint64(len(rest)-1-k) {
			return nil, fmt.Errorf("checkpoint: section %d: bad length", kind)
		}
		sec := rest[1+k : 1+k+int(n)]
		rest = rest[1+k+int(n):]
		seen[kind]++
		var err error
		switch kind {
		case sectionOptions:
			c.Options, err = decodeOptions(sec)
		case sectionStream:
			c.Streams = append(c.Streams, sec)
		case sectionAlerts:
			err = json.Unmarshal(sec, &c.Alerts)
		case sectionHistory:
			err = json.Unmarshal(sec, &c.History)
		default:
			err = errors.New("unknown kind")
		}
		if err != nil {
			return nil, fmt.Errorf("checkpoint: section %d: %w", kind, err)
		}
	}
	for _, kind := range []byte{sectionOptions, sectionAlerts, sectionHistory} {
		if seen[kind] != 1 {
			return nil, fmt.Errorf("checkpoint: %d sections of kind %d, want 1", seen[kind], kind)
		}
	}
	return c, nil
}

func decodeOptions(b []byte) (windowOptions, error) {
	var o windowOptions
	n, k := binary.Uvarint(b)
	if k <= 0 || n > 64 {
		return o, errors.New("bad size count")
	}
	b = b[k:]
	for range n {
		s, k := binary.Uvarint(b)
		if k <= 0 {
			return o, errors.New("bad size")
		}
		o.SizesMS = append(o.SizesMS, s)
		b = b[k:]
	}
	l, k := binary.Varint(b)
	if k <= 0 || len(b[k:]) != 8 {
		return o, errors.New("bad lateness or accuracy")
	}
	o.LatenessMS = l
	o.Accuracy = math.Float64frombits(binary.LittleEndian.Uint64(b[k:]))
	return o, nil
}

// checkpointName is the file name of a checkpoint at offset off.
func checkpointName(off uint64) string { return fmt.Sprintf("%020d%s", off, checkpointExt) }

// listCheckpoints returns the checkpoint files in dir, newest (highest
// offset) first, and deletes leftover temporary files.
func listCheckpoints(fsys vfs.FS, dir string) ([]string, error) {
	entries, err := fsys.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, name := range entries {
		if strings.HasSuffix(name, ".tmp") {
			_ = fsys.Remove(filepath.Join(dir, name))
			continue
		}
		base, ok := strings.CutSuffix(name, checkpointExt)
		if _, err := strconv.ParseUint(base, 10, 64); !ok || err != nil {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	slices.Reverse(names)
	return names, nil
}

// writeCheckpoint writes data as the checkpoint at off atomically, then
// deletes all but the newest keep checkpoints.
func writeCheckpoint(fsys vfs.FS, dir string, off uint64, data []byte, keep int) error {
	if err := fsys.MkdirAll(dir); err != nil {
		return err
	}
	if err := vfs.WriteAtomic(fsys, filepath.Join(dir, checkpointName(off)), data); err != nil {
		return err
	}
	names, err := listCheckpoints(fsys, dir)
	if err != nil {
		return err
	}
	for _, name := range names[min(keep, len(names)):] {
		if err := fsys.Remove(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// assemble builds the checkpoint of off from every worker's part.
func (p *Processor) assemble(off uint64, parts []*workerSnap) *Checkpoint {
	c := &Checkpoint{Offset: off, WrittenAt: p.opts.now(), Options: optionsOf(p.opts.Window), started: parts[0].sent}
	for _, s := range parts {
		c.Streams = append(c.Streams, s.streams...)
		c.Alerts.Keys = append(c.Alerts.Keys, s.alerts.Keys...)
	}
	p.alertsMu.RLock()
	for _, id := range p.alertIDs {
		c.History = append(c.History, p.alerts[id])
	}
	p.alertsMu.RUnlock()
	return c
}

// writeCheckpoints writes the checkpoints the writer assembles, one at a time,
// until the writer stops.
func (p *Processor) writeCheckpoints() {
	for c := range p.ckpt {
		start := time.Now()
		capture := start.Sub(c.started) // the workers' state capture and the outputs' flush
		data, err := c.Encode()
		if err == nil {
			err = writeCheckpoint(p.opts.Checkpoints.FS, p.opts.Checkpoints.Dir, c.Offset, data, p.opts.Checkpoints.Keep)
		}
		took := time.Since(c.started)
		if err != nil {
			p.opts.Metrics.CheckpointFailures.Inc()
			p.opts.Logger.Error("checkpoint not written; the previous ones stay in use", "offset", c.Offset, "err", err)
			continue
		}
		p.checkpointed.Store(c.Offset + 1)
		p.opts.Metrics.Checkpoints.Inc()
		p.opts.Metrics.CheckpointSeconds.Observe(took.Seconds())
		p.opts.Metrics.CheckpointBytes.Set(float64(len(data)))
		p.opts.Metrics.CheckpointOffset.Set(float64(c.Offset))
		p.opts.Logger.Info("checkpoint written", "offset", c.Offset, "bytes", len(data), "streams", len(c.Streams),
			"alert_keys", len(c.Alerts.Keys), "took", took.Round(time.Microsecond),
			"capture", capture.Round(time.Microsecond), "write", time.Since(start).Round(time.Microsecond))
	}
}

// CheckpointOffset is the offset of the newest checkpoint on disk: a restart
// replays from it, so the records from it on must stay in the buffer.
func (p *Processor) CheckpointOffset() (off uint64, ok bool) {
	v := p.checkpointed.Load()
	return v - 1, v > 0
}

// StartOffset is where processing started: the offset of the checkpoint it
// resumed from (fromCheckpoint true), or 0.
func (p *Processor) StartOffset() (off uint64, fromCheckpoint bool) { return p.start, p.fromCheckpoint }

// restore loads the newest usable checkpoint into fresh workers and sets the
// offset processing starts from. Without one, processing starts at 0.
func (p *Processor) restore() {
	start := time.Now()
	names, err := listCheckpoints(p.opts.Checkpoints.FS, p.opts.Checkpoints.Dir)
	if err != nil {
		p.opts.Logger.Error("cannot list checkpoints; replaying the whole log", "err", err)
		return
	}
	for _, name := range names {
		path := filepath.Join(p.opts.Checkpoints.Dir, name)
		c, err := p.loadCheckpoint(path)
		if err != nil {
			p.opts.Metrics.LoadFailures.Inc()
			p.opts.Logger.Error("checkpoint unusable; trying the previous one", "file", path, "err", err)
			if err := p.newWorkers(); err != nil {
				p.opts.Logger.Error("cannot reset the workers", "err", err)
				return
			}
			continue
		}
		took := time.Since(start)
		p.opts.Metrics.RestoreSeconds.Set(took.Seconds())
		p.opts.Logger.Info("checkpoint loaded", "file", path, "offset", c.Offset, "streams", len(c.Streams),
			"alert_keys", len(c.Alerts.Keys), "took", took.Round(time.Microsecond))
		return
	}
	if len(names) > 0 {
		p.opts.Logger.Warn("no usable checkpoint; replaying the whole log", "tried", len(names))
	}
}

// loadCheckpoint restores the checkpoint at path into the workers.
func (p *Processor) loadCheckpoint(path string) (*Checkpoint, error) {
	data, err := vfs.ReadFile(p.opts.Checkpoints.FS, path)
	if err != nil {
		return nil, err
	}
	c, err := DecodeCheckpoint(data)
	if err != nil {
		return nil, err
	}
	if want := optionsOf(p.opts.Window); !c.Options.equal(want) {
		return nil, fmt.Errorf("written with window options %+v, running with %+v", c.Options, want)
	}
	if d := p.log.DurableOffset(); c.Offset > d {
		return nil, fmt.Errorf("covers offset %d, past the log's end %d", c.Offset, d)
	}
	if err := p.restoreStreams(c.Streams); err != nil {
		return nil, err
	}
	ruleStream := map[string]string{}
	for _, r := range p.opts.Rules {
		ruleStream[r.Name] = r.Stream
	}
	perWorker := make([]alert.EngineState, len(p.work))
	dropped := 0
	for _, k := range c.Alerts.Keys {
		stream, ok := ruleStream[k.Rule]
		if !ok {
			dropped++
			continue
		}
		i := p.alertWorker(stream, k)
		perWorker[i].Keys = append(perWorker[i].Keys, k)
	}
	for i, w := range p.work {
		dropped += w.rules.Restore(perWorker[i])
		w.processed = c.Offset
	}
	if dropped > 0 {
		p.opts.Logger.Warn("alert state of changed or removed rules dropped", "keys", dropped)
	}
	p.alertsMu.Lock()
	clear(p.alerts)
	p.alertIDs = p.alertIDs[:0]
	p.alertsMu.Unlock()
	for _, a := range c.History {
		p.recordAlert(a)
	}
	p.start, p.fromCheckpoint = c.Offset, true
	p.checkpointed.Store(c.Offset + 1)
	return c, nil
}
