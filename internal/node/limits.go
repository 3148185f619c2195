package node

import (
	"context"
	"slices"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/ingest/ratelimit"
	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// ingestLimits are the per-device rate limit (config limits:) and the hot-spot
// detector every ingested event passes (issue 15).
type ingestLimits struct {
	rate *ratelimit.Limiter // nil: no limit
	hot  *pressure.HotspotDetector
}

// startLimits builds the rate limiter and the hot-spot detector, before the
// listeners that use them. The detector counts over the smallest window size.
func (n *Node) startLimits() {
	lc := n.cfg.Limits
	l := &ingestLimits{rate: ratelimit.New(ratelimit.Options{Rate: lc.DeviceRate, Burst: lc.Burst(), Registerer: n.reg})}
	l.hot = pressure.NewHotspotDetector(pressure.HotspotOptions{Window: slices.Min(n.cfg.Windows.Sizes), Bursts: l.bursts})
	n.reg.MustRegister(l.hot)
	n.limits = l
}

// bursts are the devices over their rate limit in the last minute, as
// device_burst hot spots.
func (l *ingestLimits) bursts() []pressure.Hotspot {
	rate, _ := l.rate.Rate()
	var out []pressure.Hotspot
	for _, b := range l.rate.Bursts() {
		out = append(out, pressure.Hotspot{Type: pressure.DeviceBurst, Stream: b.Stream, Key: b.Device,
			Share: b.Over, Ratio: b.Offered / rate})
	}
	return out
}

// ingestAppender is what the transports store through: the node's appender,
// with every event it stores counted by the hot-spot detector.
func (n *Node) ingestAppender() ingest.Appender {
	return &observedAppender{Appender: n.appender(), hot: n.limits.hot}
}

// hotspots are the hot spots for status, [] when none.
func (n *Node) hotspots() []pressure.Hotspot {
	if n.limits == nil {
		return []pressure.Hotspot{}
	}
	return n.limits.hot.Hotspots()
}

type observedAppender struct {
	ingest.Appender
	hot *pressure.HotspotDetector
}

func (a *observedAppender) Append(ctx context.Context, evs []event.Event) (ingest.Result, error) {
	res, err := a.Appender.Append(ctx, evs)
	if err == nil {
		a.hot.ObserveAll(len(evs), func(i int) (string, string) { return evs[i].Stream, evs[i].DeviceID })
	}
	return res, err
}
