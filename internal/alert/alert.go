// Package alert evaluates alert rules over raw events and closed window results,
// and delivers the alerts they produce to notifiers.
//
// What it promises:
//
//   - Evaluation is deterministic. An [Engine] has no clock and does no I/O: the
//     alerts it returns, their order and their ids are a function of the rules and
//     the sequence of OnEvent/OnWindow calls alone, so the processor replaying the
//     log after a crash produces the same alerts with the same ids. Time is event
//     time (an event's ts, a window's end). [Engine.State] and [Engine.Restore]
//     carry the evaluation state across a checkpoint.
//   - Each episode of a rule's condition on a device (or site-wide) yields exactly
//     one firing alert and at most one resolved alert with the same id; repeats are
//     suppressed while it fires.
//   - Delivery is at least once per notifier, across restarts and crashes. The
//     processor writes each alert to the durable log first; each notifier of a
//     [Dispatcher] reads the log's alert records in offset order on its own
//     goroutine, with a durable cursor of its own (docs/format/notify.md), so a
//     slow channel delays no other and nothing is dropped for want of room: a
//     notifier that falls behind lags, bounded by the log. An alert is tried on
//     each notifier until delivered or its retries run out; then it is logged,
//     counted as failed and passed, so it holds back no later alert. The cursor
//     moves past an alert only once the notifier is done with it: after a stop
//     or a crash each notifier resumes at the first alert it had not finished.
//     Records retention deletes before a notifier read them are passed over and
//     counted.
//   - Backup policy: a critical alert also goes to the backup channel (a command,
//     such as an SMS gateway) when any primary notifier finally fails to deliver
//     it, the primary waiting for the hand-off before it moves on, or as soon as
//     the backup's own reader reads it while the primary channels are known to
//     be unreachable (the uplink is offline). Other severities never use the
//     backup channel. A critical alert reaches the backup channel at most once
//     per run of the node; a restart before the hand-off was done repeats it.
//
// Which library does what: github.com/cenkalti/backoff/v5 runs the retries of the
// webhook and command notifiers (exponential backoff with jitter, Retry-After,
// permanent errors; the seed's defaults: 100 ms initial, 60 s max, ×2, ±10 %, 10
// tries). net/http posts webhooks, os/exec runs commands, the embedded mochi
// broker's Server.Publish satisfies [Publisher], log/slog logs and
// prometheus/client_golang exposes the dispatcher's counters.
package alert

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Severity grades an alert.
type Severity string

// Severities.
const (
	Info     Severity = "info"
	Warning  Severity = "warning"
	Critical Severity = "critical"
)

// State is whether an alert is firing or has resolved.
type State string

// States.
const (
	Firing   State = "firing"
	Resolved State = "resolved"
)

// Alert is one state change of a rule for a device, or site-wide.
type Alert struct {
	// ID is stable: rule name + "/" + device ("*" for site-wide) + "/" + FiredAt
	// in Unix ms. A firing alert and its resolve share it.
	ID         string
	Rule       string
	Severity   Severity
	State      State
	Stream     string
	DeviceID   string  // "" for site-wide
	Value      float64 // the input value that fired it; for a resolve, the value that cleared it
	Threshold  float64
	FiredAt    int64 // event time, Unix ms
	ResolvedAt int64 // event time, Unix ms; 0 while firing
}

// alertJSON is the wire shape of an Alert, shared with the HTTP API and syncing.
type alertJSON struct {
	ID         string   `json:"id"`
	Rule       string   `json:"rule"`
	Severity   Severity `json:"severity"`
	State      State    `json:"state"`
	Stream     string   `json:"stream"`
	DeviceID   string   `json:"device_id"`
	Value      float64  `json:"value"`
	Threshold  float64  `json:"threshold"`
	FiredAt    string   `json:"fired_at"`
	ResolvedAt string   `json:"resolved_at,omitempty"`
}

// timeLayout is RFC 3339 with milliseconds, as every holdfast response uses.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatMS(ms int64) string { return time.UnixMilli(ms).UTC().Format(timeLayout) }

// MarshalJSON encodes the alert as {"id","rule","severity","state","stream",
// "device_id","value","threshold","fired_at","resolved_at"} with RFC 3339 UTC
// millisecond times; resolved_at is omitted while firing.
func (a Alert) MarshalJSON() ([]byte, error) {
	j := alertJSON{
		ID: a.ID, Rule: a.Rule, Severity: a.Severity, State: a.State, Stream: a.Stream,
		DeviceID: a.DeviceID, Value: a.Value, Threshold: a.Threshold, FiredAt: formatMS(a.FiredAt),
	}
	if a.ResolvedAt != 0 {
		j.ResolvedAt = formatMS(a.ResolvedAt)
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON encodes; times may also be Unix ms.
func (a *Alert) UnmarshalJSON(b []byte) error {
	var j struct {
		alertJSON
		FiredAt    json.RawMessage `json:"fired_at"`
		ResolvedAt json.RawMessage `json:"resolved_at"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	fired, err := parseTime(j.FiredAt)
	if err != nil {
		return fmt.Errorf("alert: fired_at: %w", err)
	}
	resolved, err := parseTime(j.ResolvedAt)
	if err != nil {
		return fmt.Errorf("alert: resolved_at: %w", err)
	}
	*a = Alert{
		ID: j.ID, Rule: j.Rule, Severity: j.Severity, State: j.State, Stream: j.Stream,
		DeviceID: j.DeviceID, Value: j.Value, Threshold: j.Threshold, FiredAt: fired, ResolvedAt: resolved,
	}
	return nil
}

// parseTime reads an RFC 3339 string or a number of Unix ms; absent or null is 0.
func parseTime(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return strconv.ParseInt(string(raw), 10, 64)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	return t.UnixMilli(), nil
}
