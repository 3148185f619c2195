package site

// Member is one node of the site as the membership sees it.
type Member struct {
	NodeID string `json:"node_id"`
	HTTP   string `json:"http"` // base URL, e.g. "http://10.0.0.5:8080"
	MQTT   string `json:"mqtt"` // host:port, "" when the node has no MQTT listener
	Zone   string `json:"zone"`
	Load   Load   `json:"load"`
	State  string `json:"state"` // "alive" | "suspect" | "dead" | "left"
}

// Load is what a member gossips about how busy it is.
type Load struct {
	EventsPerSec float64 `json:"events_per_s"`
	CPU          float64 `json:"cpu"`         // 0..1 of the machine
	Buffer       float64 `json:"buffer"`      // 0..1 of the buffer capacity used
	LagRecords   uint64  `json:"lag_records"` // records not yet synced
}

// The states of a member.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)
