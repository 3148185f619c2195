package api

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// windowJSON is one element of GET /v1/windows.
type windowJSON struct {
	Stream   string  `json:"stream"`
	DeviceID string  `json:"device_id,omitempty"`
	Size     string  `json:"size"`
	Start    string  `json:"start"`
	End      string  `json:"end"`
	Count    uint64  `json:"count"`
	Sum      float64 `json:"sum"`
	Overflow bool    `json:"overflow,omitempty"` // Sum is saturated at ±MaxFloat64; Mean is exact
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
	Mean     float64 `json:"mean"`
	Last     float64 `json:"last"`
	P50      float64 `json:"p50"`
	P95      float64 `json:"p95"`
	P99      float64 `json:"p99"`
	Final    bool    `json:"final"`
	ID       string  `json:"id"`
}

const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func msTime(ms int64) string { return time.UnixMilli(ms).UTC().Format(timeLayout) }

// queryWindows serves GET /v1/windows?stream=&device_id=&size=&from=&to=&limit=&cursor=&scope=.
// Without device_id it answers site-wide windows; device_id=* means every
// device's and the site-wide ones. The first page starts with the open
// windows' partial results (final=false), then closed ones, most recent first.
// In an active-active pair (Options.Peer) it answers the windows of both
// nodes merged (siteWindows) unless scope=node.
func queryWindows(w http.ResponseWriter, r *http.Request, o Options) {
	v := r.URL.Query()
	q := store.WindowQuery{Stream: v.Get("stream"), DeviceID: v.Get("device_id")}
	var err error
	fail := func(err error) { writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()}) }
	scope := v.Get("scope")
	if scope != "" && scope != "node" && scope != "site" {
		fail(fmt.Errorf("scope: %q must be node or site", scope))
		return
	}
	if s := v.Get("size"); s != "" {
		if q.Size, err = time.ParseDuration(s); err != nil || q.Size <= 0 {
			fail(fmt.Errorf("size: %q is not a duration like 1m or 5m", s))
			return
		}
		if len(o.WindowSizes) > 0 && !slices.Contains(o.WindowSizes, q.Size) {
			sizes := make([]string, len(o.WindowSizes))
			for i, sz := range o.WindowSizes {
				sizes[i] = sz.String()
			}
			fail(fmt.Errorf("size: %q is not a configured window size; the sizes are %s (windows.sizes)", s, strings.Join(sizes, ", ")))
			return
		}
	}
	if q.From, err = parseTime("from", v.Get("from")); err != nil {
		fail(err)
		return
	}
	if q.To, err = parseTime("to", v.Get("to")); err != nil {
		fail(err)
		return
	}
	if o.Windows != nil || o.Peer != nil && scope != "node" {
		siteWindows(w, r, o, q)
		return
	}
	if q.Limit, q.Before, err = paging(v.Get("limit"), v.Get("cursor")); err != nil {
		fail(err)
		return
	}
	out := struct {
		Windows []windowJSON `json:"windows"`
		Next    string       `json:"next,omitempty"`
	}{Windows: []windowJSON{}}
	if q.Before == 0 && o.OpenWindows != nil {
		from, to := int64(math.MinInt64), int64(math.MaxInt64)
		if !q.From.IsZero() {
			from = q.From.UnixMilli()
		}
		if !q.To.IsZero() {
			to = q.To.UnixMilli()
		}
		for _, res := range o.OpenWindows(q.Stream, q.DeviceID, q.Size, from, to) {
			out.Windows = append(out.Windows, resultJSON(&res))
		}
	}
	page, err := o.Store.QueryWindows(q)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	for _, sw := range page.Windows {
		size := time.Duration(sw.SizeMS) * time.Millisecond
		out.Windows = append(out.Windows, windowJSON{
			Stream: sw.Stream, DeviceID: sw.DeviceID, Size: size.String(), Start: msTime(sw.Start),
			End: msTime(sw.Start + sw.SizeMS), Count: sw.Count, Sum: sw.Sum, Overflow: sw.Overflow, Min: sw.Min, Max: sw.Max,
			Mean: sw.Mean(), Last: sw.Last, P50: sw.P50, P95: sw.P95, P99: sw.P99, Final: true,
			ID: sw.ID(),
		})
	}
	if page.Next != 0 {
		out.Next = strconv.FormatUint(page.Next, 10)
	}
	writeJSON(w, http.StatusOK, out)
}

// resultJSON shows a window's result.
func resultJSON(res *window.Result) windowJSON {
	return windowJSON{
		Stream: res.Stream, DeviceID: res.DeviceID, Size: res.Size.String(), Start: msTime(res.Start),
		End: msTime(res.End), Count: res.Count, Sum: res.Sum, Overflow: res.Overflow, Min: res.Min, Max: res.Max, Mean: res.Mean,
		Last: res.Last, P50: res.P50, P95: res.P95, P99: res.P99, Final: res.Final,
		ID: windowID(res.Stream, res.DeviceID, res.Size, res.Start),
	}
}

func windowID(stream, device string, size time.Duration, start int64) string {
	if device == "" {
		device = "*"
	}
	return fmt.Sprintf("%s/%s/%d/%d", stream, device, size.Milliseconds(), start)
}

// queryAlerts serves GET /v1/alerts?state=&severity=.
func queryAlerts(w http.ResponseWriter, r *http.Request, o Options) {
	v := r.URL.Query()
	state, sev := v.Get("state"), v.Get("severity")
	switch alert.State(state) {
	case "", alert.Firing, alert.Resolved:
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("state: %q must be firing or resolved", state)})
		return
	}
	switch alert.Severity(sev) {
	case "", alert.Info, alert.Warning, alert.Critical:
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("severity: %q must be info, warning or critical", sev)})
		return
	}
	alerts := []alert.Alert{}
	if o.Alerts != nil {
		alerts = append(alerts, o.Alerts(state, sev)...)
	}
	writeJSON(w, http.StatusOK, map[string]any{"alerts": alerts})
}

// paging parses limit and cursor.
func paging(limit, cursor string) (int, uint64, error) {
	n := 0
	if limit != "" {
		var err error
		n, err = strconv.Atoi(limit)
		if err != nil || n < 1 || n > store.MaxLimit {
			return 0, 0, fmt.Errorf("limit: %q must be an integer from 1 to %d", limit, store.MaxLimit)
		}
	}
	var before uint64
	if cursor != "" {
		var err error
		before, err = strconv.ParseUint(cursor, 10, 64)
		if err != nil || before == 0 {
			return 0, 0, fmt.Errorf("cursor: %q is not a cursor returned as \"next\"", cursor)
		}
	}
	return n, before, nil
}
