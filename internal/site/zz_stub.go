package site

// TEMPORARY stub of the API being written on branch site; removed at merge.

import (
	"context"
	"log/slog"
	"time"
)

type Member struct {
	NodeID string `json:"node_id"`
	HTTP   string `json:"http"`
	MQTT   string `json:"mqtt"`
	Zone   string `json:"zone"`
	Load   Load   `json:"load"`
	State  string `json:"state"`
}
type Load struct {
	EventsPerSec float64 `json:"events_per_s"`
	CPU          float64 `json:"cpu"`
	Buffer       float64 `json:"buffer"`
	LagRecords   uint64  `json:"lag_records"`
}
type Options struct {
	NodeID, Listen, Advertise string
	Peers                     []string
	Secret                    []byte
	Zone, HTTP, MQTT          string
	FailureDetection          time.Duration
	Logger                    *slog.Logger
}
type Membership struct{}

func Start(ctx context.Context, o Options) (*Membership, error) { return nil, nil }
func (m *Membership) Self() Member                             { return Member{} }
func (m *Membership) Members() []Member                        { return nil }
func (m *Membership) All() []Member                            { return nil }
func (m *Membership) SetLoad(l Load)                           {}
func (m *Membership) Changes() <-chan struct{}                 { return nil }
func (m *Membership) Leave(timeout time.Duration) error        { return nil }
func (m *Membership) Close() error                             { return nil }

type Strategy string

const (
	Sticky     Strategy = "sticky"
	Geographic Strategy = "geographic"
	LoadBased  Strategy = "load"
	Semantic   Strategy = "semantic"
)

func ParseStrategy(s string) (Strategy, error) { return Strategy(s), nil }

type Device struct{ ID, Zone, Stream string }
type SemanticRule struct {
	Devices []string
	Streams []string
	Nodes   []string
	Zone    string
}
type AssignOptions struct {
	Strategy Strategy
	Rules    []SemanticRule
	ZoneOf   func(deviceID string) string
}
type Assigner struct{}

func NewAssigner(o AssignOptions) (*Assigner, error)                  { return &Assigner{}, nil }
func (a *Assigner) Owner(members []Member, d Device) (Member, bool)    { return Member{}, false }
func Moved(a *Assigner, before, after []Member, devices []Device) int { return 0 }
