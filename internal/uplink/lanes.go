package uplink

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// Lane is a sync priority lane (docs/format/lanes.md); lower is more urgent.
type Lane uint8

const (
	LaneCritical Lane = iota
	LaneHigh
	LaneNormal
	LaneLow
	numLanes
)

var laneNames = [numLanes]string{"critical", "high", "normal", "low"}

func (l Lane) String() string {
	if l < numLanes {
		return laneNames[l]
	}
	return fmt.Sprintf("lane(%d)", uint8(l))
}

// ParseLane reads a lane (a stream priority) by name; "" is normal.
func ParseLane(s string) (Lane, error) {
	if s == "" {
		return LaneNormal, nil
	}
	if i := slices.Index(laneNames[:], s); i >= 0 {
		return Lane(i), nil
	}
	return 0, fmt.Errorf("unknown priority %q: want critical, high, normal or low", s)
}

// LaneEpoch is the lane rules in force from one log offset on.
type LaneEpoch struct {
	From    uint64            `json:"from"`
	Streams map[string]string `json:"streams"` // stream → lane, streams that are not normal
	lanes   map[string]Lane
}

// LaneRules say which lane each record of the log takes: the rules of the
// epoch its offset falls in.
type LaneRules struct {
	Epochs []LaneEpoch `json:"epochs"`
}

// lanesFile is the rules' file in the data directory.
const lanesFile = "lanes"

// LoadLaneRules reads dir's lanes file and makes priorities (stream →
// priority name) the rules from next on, writing the file again if they
// changed. next must be the log's next offset before anything is appended.
func LoadLaneRules(fsys vfs.FS, dir string, priorities map[string]string, next uint64) (*LaneRules, error) {
	want := map[string]string{}
	for stream, p := range priorities {
		l, err := ParseLane(p)
		if err != nil {
			return nil, fmt.Errorf("stream %q: %w", stream, err)
		}
		if l != LaneNormal {
			want[stream] = l.String()
		}
	}
	path := filepath.Join(dir, lanesFile)
	r := &LaneRules{}
	data, err := vfs.ReadFile(fsys, path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Epochs = []LaneEpoch{{From: 0, Streams: want}}
	case err != nil:
		return nil, fmt.Errorf("read lane rules: %w", err)
	default:
		if err := json.Unmarshal(data, r); err != nil {
			return nil, fmt.Errorf("lane rules %s: %w", path, err)
		}
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("lane rules %s: %w", path, err)
		}
		last := r.Epochs[len(r.Epochs)-1]
		if maps.Equal(last.Streams, want) {
			return r, r.index()
		}
		if last.From == next {
			r.Epochs[len(r.Epochs)-1].Streams = want // nothing was written under the last rules
		} else {
			r.Epochs = append(r.Epochs, LaneEpoch{From: next, Streams: want})
		}
	}
	if err := r.index(); err != nil {
		return nil, err
	}
	data, err = json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if err := vfs.WriteAtomic(fsys, path, data); err != nil {
		return nil, fmt.Errorf("write lane rules: %w", err)
	}
	return r, nil
}

// FixedLanes returns rules that put every stream in the lane priorities give
// it, for every offset; for tests and tools without a data directory.
func FixedLanes(priorities map[string]string) (*LaneRules, error) {
	r := &LaneRules{Epochs: []LaneEpoch{{Streams: priorities}}}
	return r, r.index()
}

func (r *LaneRules) check() error {
	if len(r.Epochs) == 0 || r.Epochs[0].From != 0 {
		return errors.New("the first epoch must start at offset 0")
	}
	for i := 1; i < len(r.Epochs); i++ {
		if r.Epochs[i].From <= r.Epochs[i-1].From {
			return fmt.Errorf("epoch %d starts at %d, not after %d", i, r.Epochs[i].From, r.Epochs[i-1].From)
		}
	}
	return nil
}

func (r *LaneRules) index() error {
	for i := range r.Epochs {
		e := &r.Epochs[i]
		if e.Streams == nil {
			e.Streams = map[string]string{}
		}
		e.lanes = make(map[string]Lane, len(e.Streams))
		for stream, name := range e.Streams {
			l, err := ParseLane(name)
			if err != nil {
				return fmt.Errorf("lane rules, stream %q: %w", stream, err)
			}
			e.lanes[stream] = l
		}
	}
	return nil
}

// streamLane returns the lane of stream's records at offset off.
func (r *LaneRules) streamLane(off uint64, stream string) Lane {
	if l, ok := r.epoch(off).lanes[stream]; ok {
		return l
	}
	return LaneNormal
}

func (r *LaneRules) epoch(off uint64) *LaneEpoch {
	i := len(r.Epochs) - 1
	for i > 0 && r.Epochs[i].From > off {
		i--
	}
	return &r.Epochs[i]
}

// Possible reports whether any record can take lane l. Alerts can always
// take critical and high.
func (r *LaneRules) Possible(l Lane) bool {
	if l == LaneCritical || l == LaneHigh || l == LaneNormal {
		return true
	}
	for _, e := range r.Epochs {
		if slices.Contains(slices.Collect(maps.Values(e.lanes)), l) {
			return true
		}
	}
	return false
}

// Lane returns the lane the record p at offset off takes, and ok=false for
// records that are not synced.
func (r *LaneRules) Lane(off uint64, p []byte) (Lane, bool) {
	lane, _, ok := r.classify(off, p, numLanes)
	return lane, ok
}

// classify returns the lane of the record p at offset off and its stream, and
// ok=false for records that are not synced (unknown types,
// records that do not decode). The stream is only returned (and allocated)
// when the record is in lane want.
func (r *LaneRules) classify(off uint64, p []byte, want Lane) (lane Lane, stream string, ok bool) {
	switch event.Type(p) {
	case event.TypeEvent:
		v, ok := event.Peek(p)
		if !ok {
			return 0, "", false
		}
		lane, found := r.epoch(off).lanes[string(v.Stream)]
		if !found {
			lane = LaneNormal
		}
		if lane == want {
			stream = string(v.Stream)
		}
		return lane, stream, true
	case event.TypeWindow:
		w, err := event.DecodeWindow(p)
		if err != nil {
			return 0, "", false
		}
		return r.streamLane(off, w.Stream), w.Stream, true
	case event.TypeWatermark:
		w, err := event.DecodeWatermark(p)
		if err != nil {
			return 0, "", false
		}
		return r.streamLane(off, w.Stream), w.Stream, true
	case event.TypeAlert:
		a, err := event.DecodeAlert(p)
		if err != nil {
			return 0, "", false
		}
		if a.Severity == "critical" {
			return LaneCritical, a.Stream, true
		}
		return min(r.streamLane(off, a.Stream), LaneHigh), a.Stream, true
	case event.TypeLate:
		// Late marks list events of any stream: the normal lane, no stream.
		return LaneNormal, "", len(p) > 1
	case event.TypeLedger:
		// What was lost goes first: the cloud learns of gaps before it waits
		// for them.
		l, err := event.DecodeLedger(p)
		if err != nil {
			return 0, "", false
		}
		return LaneCritical, l.Stream, true
	}
	return 0, "", false
}
