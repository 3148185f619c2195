package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/holdfast-edge/holdfast/internal/peerwindows"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// DefaultPeerTimeout is how long GET /v1/windows waits for the peer's
// partials before answering without them.
const DefaultPeerTimeout = time.Second

// siteWindowsJSON is the body of a site-wide GET /v1/windows: the windows as
// for one node, and whether the peer's part is missing.
type siteWindowsJSON struct {
	Windows []windowJSON `json:"windows"`
	Next    string       `json:"next,omitempty"`
	Scope   string       `json:"scope"`
	// Partial says the answer holds this node's windows alone: the peer did
	// not answer in time, or answered with PeerError.
	Partial   bool   `json:"partial,omitempty"`
	PeerError string `json:"peer_error,omitempty"`
}

// siteWindows answers q with the windows of both nodes of an active-active
// pair, this node's partials merged with the peer's per window: count, sum,
// min, max, mean, last exact, quantiles from the merged sketches. A window is
// final when every node that has it has closed it; a window only one node
// has is shown as that node has it. Windows come most recent first (end
// descending, then size, stream, device), open and closed alike, and page by
// an opaque cursor. A peer that fails or does not answer within
// Options.PeerTimeout leaves this node's windows alone, with "partial": true
// and "peer_error" — never an error of the request.
func siteWindows(w http.ResponseWriter, r *http.Request, o Options, wq store.WindowQuery) {
	v := r.URL.Query()
	fail := func(err error) { writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()}) }
	q := peerwindows.Query{Stream: wq.Stream, DeviceID: wq.DeviceID, Size: wq.Size, From: math.MinInt64, To: math.MaxInt64, Limit: 100}
	if !wq.From.IsZero() {
		q.From = wq.From.UnixMilli()
	}
	if !wq.To.IsZero() {
		q.To = wq.To.UnixMilli()
	}
	var err error
	if q.Limit, _, err = paging(v.Get("limit"), ""); err != nil {
		fail(err)
		return
	}
	if q.Limit == 0 {
		q.Limit = 100
	}
	if c := v.Get("cursor"); c != "" {
		if q.After, err = parseSiteCursor(c); err != nil {
			fail(err)
			return
		}
	}
	timeout := o.PeerTimeout
	if timeout <= 0 {
		timeout = DefaultPeerTimeout
	}
	type peerAnswer struct {
		page peerwindows.Page
		err  error
	}
	peerc := make(chan peerAnswer, 1)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if o.Peer != nil {
		go func() {
			pg, err := o.Peer(ctx, q)
			peerc <- peerAnswer{pg, err}
		}()
	}
	var src peerwindows.Source = peerwindows.Local{Store: o.Store, Open: o.OpenPartials}
	if o.Windows != nil {
		src = o.Windows
	}
	local, err := src.Partials(r.Context(), q)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	out := siteWindowsJSON{Windows: []windowJSON{}, Scope: "site"}
	merged := local
	if o.Peer != nil {
		peer := <-peerc
		if peer.err == nil {
			merged, peer.err = peerwindows.Merge(q.Limit, local, peer.page)
		}
		if peer.err != nil {
			out.Partial, out.PeerError = true, peer.err.Error()
			merged = local
		}
	}
	for i := range merged.Partials {
		res := merged.Partials[i].Result()
		out.Windows = append(out.Windows, resultJSON(&res))
	}
	if merged.More && len(merged.Partials) > 0 {
		out.Next = siteCursor(merged.Partials[len(merged.Partials)-1].Key)
	}
	writeJSON(w, http.StatusOK, out)
}

// A site-wide page's cursor is the last window answered, as base64url JSON
// after "w.".
type cursorJSON struct {
	Stream   string `json:"s"`
	DeviceID string `json:"d,omitempty"`
	SizeMS   int64  `json:"z"`
	Start    int64  `json:"t"`
}

func siteCursor(k window.Key) string {
	b, _ := json.Marshal(cursorJSON{Stream: k.Stream, DeviceID: k.DeviceID, SizeMS: k.Size.Milliseconds(), Start: k.Start})
	return "w." + base64.RawURLEncoding.EncodeToString(b)
}

func parseSiteCursor(s string) (*window.Key, error) {
	bad := fmt.Errorf("cursor: %q is not a cursor returned as \"next\"", s)
	if len(s) < 2 || s[:2] != "w." {
		return nil, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s[2:])
	if err != nil {
		return nil, bad
	}
	var c cursorJSON
	if err := json.Unmarshal(b, &c); err != nil || c.SizeMS <= 0 || c.SizeMS > math.MaxInt64/int64(time.Millisecond) {
		return nil, bad
	}
	return &window.Key{Stream: c.Stream, DeviceID: c.DeviceID, Size: time.Duration(c.SizeMS) * time.Millisecond, Start: c.Start}, nil
}
