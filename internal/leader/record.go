package leader

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Key is the key of the leader record in the pair's bucket.
const Key = "leader"

// MaxHistory is how many terms a record's History keeps.
const MaxHistory = 32

// Record is the leader record, the value of Key (docs/format/ha.md).
type Record struct {
	Term    uint64 `json:"term"`
	Member  string `json:"member"`
	NodeID  string `json:"node_id"`
	HTTP    string `json:"http"`
	MQTT    string `json:"mqtt"`
	Start   uint64 `json:"start"`
	Standby string `json:"standby"`
	// Released is set by a primary that has handed over: it no longer
	// writes, and Standby may take over at once.
	Released  bool        `json:"released"`
	RenewedMs int64       `json:"renewed_ms"`
	History   []TermStart `json:"history"`
}

// TermStart is one term of a record's History.
type TermStart struct {
	Term   uint64 `json:"term"`
	Member string `json:"member"`
	Start  uint64 `json:"start"`
}

// Primary is the primary's Info as the record names it.
func (r Record) Primary() Info {
	return Info{Member: r.Member, NodeID: r.NodeID, HTTP: r.HTTP, MQTT: r.MQTT}
}

// next is the record of the term after r, with self as its primary from
// start.
func (r Record) next(self Info, start uint64, nowMs int64) Record {
	n := Record{
		Term: r.Term + 1, Member: self.Member, NodeID: self.NodeID, HTTP: self.HTTP, MQTT: self.MQTT,
		Start: start, RenewedMs: nowMs,
	}
	h := append(r.History, TermStart{Term: n.Term, Member: self.Member, Start: start})
	if len(h) > MaxHistory {
		h = h[len(h)-MaxHistory:]
	}
	n.History = append([]TermStart(nil), h...)
	return n
}

// first is the record of term 1.
func first(self Info, start uint64, nowMs int64) Record {
	return Record{}.next(self, start, nowMs)
}

func (r Record) encode() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("leader: encode record: %v", err)) // only plain fields
	}
	return b
}

// ErrBadRecord is a leader record that does not decode.
var ErrBadRecord = errors.New("leader: bad record")

func decode(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	if r.Term == 0 || r.Member == "" {
		return Record{}, fmt.Errorf("%w: no term or member: %s", ErrBadRecord, b)
	}
	return r, nil
}
