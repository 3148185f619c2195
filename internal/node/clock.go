package node

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/config"
)

// clockWatch watches the node's own clock: every second it compares the wall
// clock with the monotonic clock for jumps, and it keeps the offset from the
// cloud's clock that the cloud sink measures (uplink/clock.go), raising
// clock-offset above clock.max_offset.
type clockWatch struct {
	cfg      config.Clock
	clk      clock.Clock
	log      *slog.Logger
	raise    func(alert.Alert)
	detector *clock.Detector // used by the watch goroutine only
	jumps    *prometheus.CounterVec
	offsetG  prometheus.Gauge
	stop     chan struct{}
	done     chan struct{}
	// adopt makes the processor's idle timeouts take the wall clock again
	// (process.Processor.AdoptWallClock); nil without processing.
	adopt atomic.Pointer[func(min time.Duration) time.Duration]

	mu sync.Mutex
	// The fields below are guarded by mu.
	count     uint64
	last      *clock.Jump
	measured  bool
	offset    time.Duration // the cloud's clock minus the node's
	offErr    time.Duration // ± bound of offset
	measureAt time.Time     // node wall clock of the measurement
	firing    *alert.Alert  // the clock-offset alert, while it fires
}

func newClockWatch(cfg config.Clock, clk clock.Clock, reg prometheus.Registerer, log *slog.Logger, raise func(alert.Alert)) *clockWatch {
	w := &clockWatch{
		cfg: cfg, clk: clk, log: log, raise: raise,
		jumps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_clock_jumps_total",
			Help: "Wall-clock jumps beyond clock.jump_threshold, by direction (forward, backward).",
		}, []string{"direction"}),
		offsetG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_clock_offset_seconds",
			Help: "The cloud's clock minus the node's, as last measured (0 until then).",
		}),
	}
	w.jumps.WithLabelValues("forward")
	w.jumps.WithLabelValues("backward")
	if reg != nil {
		reg.MustRegister(w.jumps, w.offsetG)
	}
	return w
}

// start checks for jumps every second until close; adopt, if not nil, is
// called when the cloud's clock vouches for the wall clock.
func (w *clockWatch) start(adopt func(min time.Duration) time.Duration) {
	if adopt != nil {
		w.adopt.Store(&adopt)
	}
	w.detector = clock.NewDetector(w.clk, w.cfg.JumpThreshold)
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.check()
			}
		}
	}()
}

func (w *clockWatch) close() {
	if w != nil && w.stop != nil {
		close(w.stop)
		<-w.done
	}
}

// check looks for a jump since the last check. A jump is logged and counted
// once; the offset measured before it is shifted by as much, the cloud's
// clock having stayed where it was, and the alert follows at once.
func (w *clockWatch) check() {
	j, ok := w.detector.Check()
	if !ok {
		return
	}
	w.jumps.WithLabelValues(j.Direction()).Inc()
	w.log.Warn("the wall clock jumped", "by", j.By, "direction", j.Direction(), "now", j.At.UTC().Format(time.RFC3339Nano),
		"jump_threshold", w.cfg.JumpThreshold)
	w.mu.Lock()
	w.count++
	w.last = &j
	if w.measured {
		w.offset -= j.By
	}
	w.mu.Unlock()
	w.evaluate()
}

// observe takes a measurement of the offset from the cloud (the cloud
// sink's OnClock). With the wall clock within clock.max_offset of the
// cloud's, a jump the idle timeouts ignored was a correction: they adopt it.
func (w *clockWatch) observe(s clock.Sample) {
	w.mu.Lock()
	w.measured, w.offset, w.offErr, w.measureAt = true, s.Offset(), s.Error(), s.Sent
	w.mu.Unlock()
	w.evaluate()
	if f := w.adopt.Load(); f != nil && s.Offset().Abs() <= w.cfg.MaxOffset {
		if d := (*f)(w.cfg.JumpThreshold); d != 0 {
			w.log.Info("the cloud's clock agrees with the wall clock: window idle timeouts follow it again",
				"moved_by", d, "offset", s.Offset())
		}
	}
}

// evaluate raises clock-offset when the offset is above clock.max_offset and
// resolves it once it is back under.
func (w *clockWatch) evaluate() {
	now := w.clk.Now()
	w.mu.Lock()
	if !w.measured {
		w.mu.Unlock()
		return
	}
	off, maxOff := w.offset, w.cfg.MaxOffset
	w.offsetG.Set(off.Seconds())
	var raise *alert.Alert
	switch {
	case off.Abs() > maxOff && w.firing == nil:
		a := alert.Alert{ID: fmt.Sprintf("clock-offset/*/%d", now.UnixMilli()), Rule: "clock-offset",
			Severity: alert.Warning, State: alert.Firing, Stream: "*", DeviceID: "",
			Value: off.Seconds(), Threshold: maxOff.Seconds(), FiredAt: now.UnixMilli()}
		w.firing, raise = &a, &a
		w.log.Warn("the node's clock is off the cloud's: alert raised", "offset", off, "error", w.offErr, "max_offset", maxOff)
	case off.Abs() <= maxOff && w.firing != nil:
		a := *w.firing
		a.State, a.ResolvedAt, a.Value = alert.Resolved, now.UnixMilli(), off.Seconds()
		w.firing, raise = nil, &a
		w.log.Info("the node's clock is back near the cloud's: alert resolved", "offset", off, "max_offset", maxOff)
	}
	w.mu.Unlock()
	if raise != nil {
		w.raise(*raise)
	}
}

// status is the clock section of /v1/status, and a problem while
// clock-offset fires.
func (w *clockWatch) status(s *api.Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cs := &api.ClockStatus{MaxOffsetMS: w.cfg.MaxOffset.Milliseconds(), Jumps: w.count}
	if w.measured {
		off, e := w.offset.Milliseconds(), w.offErr.Milliseconds()
		at := w.measureAt.UTC().Format(time.RFC3339Nano)
		cs.OffsetMS, cs.OffsetErrorMS, cs.OffsetMeasuredAt = &off, &e, &at
	}
	if j := w.last; j != nil {
		cs.LastJump = &api.ClockJump{At: j.At.UTC().Format(time.RFC3339Nano), ByMS: j.By.Milliseconds(), Direction: j.Direction()}
	}
	s.Clock = cs
	if w.firing != nil {
		s.Problems = append(s.Problems, fmt.Sprintf("clock: %v off the cloud's clock, more than clock.max_offset %v",
			w.offset.Round(time.Millisecond), w.cfg.MaxOffset))
	}
}

// adoptWallClock is the clock watch's adopt: the processor's, if it runs.
func (n *Node) adoptWallClock() func(min time.Duration) time.Duration {
	if n.proc == nil {
		return nil
	}
	return n.proc.AdoptWallClock
}
