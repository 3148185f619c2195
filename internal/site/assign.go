package site

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
)

// Strategy is how devices are assigned to the members of a site.
type Strategy string

// The assignment strategies (docs/format/site.md).
const (
	Sticky     Strategy = "sticky"
	Geographic Strategy = "geographic"
	LoadBased  Strategy = "load"
	Semantic   Strategy = "semantic"
)

// Strategies lists every strategy, in the order the documentation gives them.
var Strategies = []Strategy{Sticky, Geographic, LoadBased, Semantic}

// ErrUnknownStrategy is returned by ParseStrategy for a name it does not know.
var ErrUnknownStrategy = errors.New("site: unknown assignment strategy")

// ParseStrategy returns the strategy named s.
func ParseStrategy(s string) (Strategy, error) {
	for _, st := range Strategies {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("%w %q: want one of sticky, geographic, load, semantic", ErrUnknownStrategy, s)
}

// Device is what an assignment is asked about.
type Device struct{ ID, Zone, Stream string }

// SemanticRule sends devices/streams matching it to the listed nodes (or zone).
type SemanticRule struct {
	Devices []string `yaml:"devices" json:"devices"` // path.Match globs on the device id; empty = any
	Streams []string `yaml:"streams" json:"streams"` // globs on the stream; empty = any
	Nodes   []string `yaml:"nodes" json:"nodes"`     // node ids
	Zone    string   `yaml:"zone" json:"zone"`       // or every node of this zone
}

// matches reports whether d matches the rule: one device glob and one
// stream glob match (an empty list matches anything). The globs were checked
// by NewAssigner.
func (r SemanticRule) matches(d Device) bool {
	return anyMatch(r.Devices, d.ID) && anyMatch(r.Streams, d.Stream)
}

func anyMatch(globs []string, s string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

// AssignOptions configures an Assigner.
type AssignOptions struct {
	Strategy Strategy
	Rules    []SemanticRule // semantic
	// ZoneOf gives a device's zone when Device.Zone is empty (e.g. config globs); may be nil
	ZoneOf func(deviceID string) string
}

// Assigner answers which member owns a device. It holds no view of its own:
// the answer is a pure function of the options, the view passed in and the
// device, so every node computing it from the same view gets the same answer.
// It is safe for concurrent use.
type Assigner struct {
	o AssignOptions
}

// NewAssigner checks o and returns its Assigner. An empty Strategy is Sticky.
func NewAssigner(o AssignOptions) (*Assigner, error) {
	if o.Strategy == "" {
		o.Strategy = Sticky
	}
	if _, err := ParseStrategy(string(o.Strategy)); err != nil {
		return nil, err
	}
	var errs []error
	for i, r := range o.Rules {
		for _, g := range slices.Concat(r.Devices, r.Streams) {
			if _, err := path.Match(g, ""); err != nil {
				errs = append(errs, fmt.Errorf("site: semantic rule %d: glob %q: %w", i, g, err))
			}
		}
		if len(r.Nodes) == 0 && r.Zone == "" {
			errs = append(errs, fmt.Errorf("site: semantic rule %d: names neither nodes nor a zone", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	o.Rules = slices.Clone(o.Rules)
	return &Assigner{o: o}, nil
}

// Strategy returns the strategy a assigns by.
func (a *Assigner) Strategy() Strategy { return a.o.Strategy }

// Owner returns the member that owns d in the view members (as from Members()). Every node computing it from the same view gets the same answer. ok=false only when members is empty.
func (a *Assigner) Owner(members []Member, d Device) (Member, bool) {
	if len(members) == 0 {
		return Member{}, false
	}
	switch a.o.Strategy {
	case Geographic:
		zone := d.Zone
		if zone == "" && a.o.ZoneOf != nil {
			zone = a.o.ZoneOf(d.ID)
		}
		mean := meanEventsPerSec(members)
		if zone != "" {
			if m, ok := weightedRendezvous(members, d.ID, mean, func(m *Member) bool { return m.Zone == zone }); ok {
				return m, true
			}
		}
		return weightedRendezvous(members, d.ID, mean, nil)
	case LoadBased:
		return weightedRendezvous(members, d.ID, meanEventsPerSec(members), nil)
	case Semantic:
		for i := range a.o.Rules {
			r := &a.o.Rules[i]
			if !r.matches(d) {
				continue
			}
			if m, ok := rendezvous(members, d.ID, r.candidate); ok {
				return m, true
			}
			break // the first matching rule decides; none of its nodes is alive
		}
	}
	return a.sticky(members, d.ID)
}

// candidate reports whether m is one of the rule's nodes or in its zone.
func (r *SemanticRule) candidate(m *Member) bool {
	return slices.Contains(r.Nodes, m.NodeID) || (r.Zone != "" && m.Zone == r.Zone)
}

// Moved returns how many of the devices change owner between two views (for tests and `holdfast bench site`).
func Moved(a *Assigner, before, after []Member, devices []Device) int {
	n := 0
	for _, d := range devices {
		b, okb := a.Owner(before, d)
		f, oka := a.Owner(after, d)
		if okb != oka || b.NodeID != f.NodeID {
			n++
		}
	}
	return n
}

// LoadLevels is how many levels a member's load is quantized into.
const LoadLevels = 8

// LoadLevel quantizes l into 0 (idle) .. LoadLevels-1 (saturated):
// pressure = max(CPU, Buffer, EventsPerSec / (2 × meanEventsPerSec)), clamped
// to [0, 1], times LoadLevels. A member taking the site's mean rate is at
// pressure 0.5 from the rate alone; meanEventsPerSec ≤ 0 leaves the rate out.
func LoadLevel(l Load, meanEventsPerSec float64) int {
	p := max(l.CPU, l.Buffer)
	if meanEventsPerSec > 0 {
		p = max(p, l.EventsPerSec/(2*meanEventsPerSec))
	}
	if !(p > 0) { // also NaN
		return 0
	}
	return min(LoadLevels-1, int(p*LoadLevels))
}

func meanEventsPerSec(members []Member) float64 {
	var sum float64
	for _, m := range members {
		if m.Load.EventsPerSec > 0 {
			sum += m.Load.EventsPerSec
		}
	}
	return sum / float64(len(members))
}

// weightedRendezvous is load-weighted rendezvous hashing over the members
// that pass keep (all when keep is nil): weight 1/(1+level), score
// -weight/ln(u) with u = hash(device, node) in (0, 1), the highest score wins
// (ties to the smaller node id, so the answer does not depend on the order of
// members).
func weightedRendezvous(members []Member, device string, mean float64, keep func(*Member) bool) (Member, bool) {
	dh := hashString(device)
	best, bestScore := -1, 0.0
	for i := range members {
		m := &members[i]
		if keep != nil && !keep(m) {
			continue
		}
		w := 1 / float64(1+LoadLevel(m.Load, mean))
		s := -w / math.Log(unit(mix(dh, hashString(m.NodeID))))
		if best < 0 || s > bestScore || (s == bestScore && m.NodeID < members[best].NodeID) {
			best, bestScore = i, s
		}
	}
	if best < 0 {
		return Member{}, false
	}
	return members[best], true
}

// rendezvous is plain (unweighted) rendezvous hashing over the members that
// pass keep: the highest hash(device, node) wins.
func rendezvous(members []Member, device string, keep func(*Member) bool) (Member, bool) {
	dh := hashString(device)
	best, bestScore := -1, uint64(0)
	for i := range members {
		m := &members[i]
		if keep != nil && !keep(m) {
			continue
		}
		s := mix(dh, hashString(m.NodeID))
		if best < 0 || s > bestScore || (s == bestScore && m.NodeID < members[best].NodeID) {
			best, bestScore = i, s
		}
	}
	if best < 0 {
		return Member{}, false
	}
	return members[best], true
}

// sticky is consistent hashing with bounded loads over the members' node ids.
// sticky is rendezvous hashing over all members (see the package comment
// for why not consistent hashing with bounded loads).
func (a *Assigner) sticky(members []Member, device string) (Member, bool) {
	return rendezvous(members, device, nil)
}

func byNodeID(a, b Member) int { return strings.Compare(a.NodeID, b.NodeID) }
