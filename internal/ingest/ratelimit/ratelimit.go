// Package ratelimit is the per-device rate limit of ingest (config `limits:`):
// a token bucket per device id (golang.org/x/time/rate), device_rate events per
// second with device_burst events of slack, kept in a bounded map.
//
// It promises:
//   - a device that stays at or under its rate is never limited;
//   - the map holds at most Options.MaxDevices devices: a device idle for
//     Options.Idle (at least the time its bucket takes to refill) is dropped,
//     which loses nothing since its bucket was full again; past the bound an
//     arbitrary device is dropped, and starts again with a full bucket;
//   - every event refused or held is counted in
//     holdfast_rate_limited_events_total{transport}, and the devices limited
//     in the last minute are listed by Bursts. Nothing is ledgered: a refused
//     event was never acknowledged, the device still has it.
//
// The transports decide what "over the limit" means for them: HTTP and MQTT 5
// refuse (Allow), MQTT 3.1.1 holds the acknowledgement (Hold).
package ratelimit

import (
	"hash/maphash"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Defaults.
const (
	DefaultIdle       = 5 * time.Minute
	DefaultMaxDevices = 100_000
	// BurstWindow is how long a device limited once stays in Bursts.
	BurstWindow = time.Minute
	shards      = 16
)

// Options configure a Limiter.
type Options struct {
	// Rate is events per second per device; 0 turns the limit off (New
	// returns nil).
	Rate float64
	// Burst is the bucket size, in events; 0: max(1, Rate).
	Burst int
	// Idle is how long a device sends nothing before its bucket is forgotten
	// (default DefaultIdle, and never less than Burst/Rate).
	Idle time.Duration
	// MaxDevices bounds the devices remembered (default DefaultMaxDevices).
	MaxDevices int
	// Registerer, if set, gets holdfast_rate_limited_events_total.
	Registerer prometheus.Registerer
	// now is the clock (tests); default time.Now.
	now func() time.Time
}

// Limiter holds a token bucket per device. A nil *Limiter allows everything.
// It is safe for concurrent use.
type Limiter struct {
	rate    rate.Limit
	burst   int
	idle    time.Duration
	perShrd int
	now     func() time.Time
	seed    maphash.Seed
	limited *prometheus.CounterVec
	shards  [shards]shard
}

type shard struct {
	mu        sync.Mutex
	devices   map[string]*bucket // guarded by mu
	lastSweep time.Time          // guarded by mu
}

// bucket is one device's token bucket and what it was refused lately.
type bucket struct {
	lim  *rate.Limiter
	last time.Time // last event seen; guarded by the shard's mu
	// In the minute-long period starting at since: events let through and
	// events refused or held. prev* are the period before. Guarded by the
	// shard's mu.
	since               time.Time
	allowed, over       int
	prevAllowed, prevOv int
	lastOver            time.Time // zero: never limited
	lastStream          string    // the stream of the last event over the limit
}

// New returns a Limiter, or nil when opts.Rate is 0 (no limit).
func New(opts Options) *Limiter {
	if opts.Rate <= 0 {
		return nil
	}
	if opts.Burst <= 0 {
		opts.Burst = max(1, int(math.Ceil(opts.Rate)))
	}
	if opts.Idle <= 0 {
		opts.Idle = DefaultIdle
	}
	if refill := time.Duration(float64(opts.Burst) / opts.Rate * float64(time.Second)); opts.Idle < refill {
		opts.Idle = refill
	}
	if opts.MaxDevices <= 0 {
		opts.MaxDevices = DefaultMaxDevices
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	l := &Limiter{
		rate: rate.Limit(opts.Rate), burst: opts.Burst, idle: opts.Idle,
		perShrd: max(1, opts.MaxDevices/shards), now: opts.now, seed: maphash.MakeSeed(),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_rate_limited_events_total",
			Help: "Events over their device's rate limit (limits.device_rate), by transport: refused (HTTP 429, MQTT 5 0x97) or, MQTT 3.1.1, held before their ack. Not losses: none was acknowledged and dropped.",
		}, []string{"transport"}),
	}
	for i := range l.shards {
		l.shards[i].devices = make(map[string]*bucket)
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(l.limited)
	}
	return l
}

// Rate returns the limit in events per second and the bucket size.
func (l *Limiter) Rate() (float64, int) {
	if l == nil {
		return 0, 0
	}
	return float64(l.rate), l.burst
}

// Allow takes one token for device's event on stream. If there is none it
// counts the event as limited on transport and returns false and how long
// until a token is there.
func (l *Limiter) Allow(transport, device, stream string) (ok bool, retry time.Duration) {
	if l == nil {
		return true, 0
	}
	return l.AllowAt(l.now(), transport, device, stream)
}

// Now is the limiter's clock, for AllowAt.
func (l *Limiter) Now() time.Time {
	if l == nil {
		return time.Time{}
	}
	return l.now()
}

// AllowAt is Allow at now: a caller with many events at once (an HTTP
// batch) reads the clock once.
func (l *Limiter) AllowAt(now time.Time, transport, device, stream string) (ok bool, retry time.Duration) {
	if l == nil {
		return true, 0
	}
	sh := l.shard(device)
	sh.mu.Lock()
	b := sh.get(l, device, now)
	if b.lim.AllowN(now, 1) {
		b.count(now, true, stream)
		sh.mu.Unlock()
		return true, 0
	}
	b.count(now, false, stream)
	retry = l.delay(b.lim.TokensAt(now))
	sh.mu.Unlock()
	l.limited.WithLabelValues(transport).Inc()
	return false, retry
}

// AllowUpTo is AllowAt for n events of one device at once (a run of them in
// an HTTP batch): it takes as many tokens as there are, up to n, and returns
// how many events that lets through — the first ones — and, if not all, how
// long until the next token.
func (l *Limiter) AllowUpTo(now time.Time, transport, device, stream string, n int) (allowed int, retry time.Duration) {
	if l == nil || n <= 0 {
		return n, 0
	}
	sh := l.shard(device)
	sh.mu.Lock()
	b := sh.get(l, device, now)
	switch {
	case n == 1: // the common case, in one call
		if b.lim.AllowN(now, 1) {
			allowed = 1
		}
	default:
		allowed = min(n, int(math.Floor(b.lim.TokensAt(now))))
		if allowed > 0 && !b.lim.AllowN(now, allowed) {
			allowed = 0 // cannot happen: the tokens were there
		}
	}
	b.countN(now, allowed, n-allowed, stream)
	if allowed < n {
		retry = l.delay(b.lim.TokensAt(now))
	}
	sh.mu.Unlock()
	if allowed < n {
		l.limited.WithLabelValues(transport).Add(float64(n - allowed))
	}
	return allowed, retry
}

// Hold takes one token for device's event on stream, borrowing it from the
// future if there is none, and returns how long the caller must wait before
// storing the event, at most maxWait. A wait past maxWait is not borrowed:
// the event is let through after maxWait without taking a token. A non-zero
// wait counts the event as limited on transport.
func (l *Limiter) Hold(transport, device, stream string, maxWait time.Duration) time.Duration {
	if l == nil {
		return 0
	}
	now := l.now()
	sh := l.shard(device)
	sh.mu.Lock()
	b := sh.get(l, device, now)
	r := b.lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d > maxWait {
		r.CancelAt(now)
		d = maxWait
	}
	b.count(now, d == 0, stream)
	sh.mu.Unlock()
	if d > 0 {
		l.limited.WithLabelValues(transport).Inc()
	}
	return d
}

// delay is the time until the bucket holding tokens has one again.
func (l *Limiter) delay(tokens float64) time.Duration {
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(l.rate) * float64(time.Second))
}

// Burst is a device over its rate limit within the last BurstWindow.
type Burst struct {
	Device string
	Stream string // of the last event over the limit
	// Offered is the events the device sent (let through and over the
	// limit) per second, over the last one to two minutes; Over the
	// fraction of them over the limit.
	Offered float64
	Over    float64
}

// Bursts lists the devices over their limit within the last BurstWindow,
// most offered first. It walks every device remembered: call it for status,
// not per event.
func (l *Limiter) Bursts() []Burst {
	if l == nil {
		return nil
	}
	now := l.now()
	var out []Burst
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for dev, b := range sh.devices {
			if b.lastOver.IsZero() || now.Sub(b.lastOver) > BurstWindow {
				continue
			}
			b.roll(now)
			allowed, over := b.allowed+b.prevAllowed, b.over+b.prevOv
			span := now.Sub(b.since)
			if b.prevAllowed+b.prevOv > 0 {
				span += time.Minute
			}
			span = max(span, time.Second)
			total := allowed + over
			out = append(out, Burst{Device: dev, Stream: b.lastStream,
				Offered: float64(total) / span.Seconds(), Over: float64(over) / float64(max(total, 1))})
		}
		sh.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Offered > out[j].Offered })
	return out
}

// Devices returns how many devices the limiter remembers.
func (l *Limiter) Devices() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		l.shards[i].mu.Lock()
		n += len(l.shards[i].devices)
		l.shards[i].mu.Unlock()
	}
	return n
}

func (l *Limiter) shard(device string) *shard {
	return &l.shards[maphash.String(l.seed, device)%shards]
}

// get returns device's bucket, making room for it if it is new. sh.mu is held.
func (sh *shard) get(l *Limiter, device string, now time.Time) *bucket {
	if b, ok := sh.devices[device]; ok {
		b.last = now
		return b
	}
	if now.Sub(sh.lastSweep) >= l.idle/4 || len(sh.devices) >= l.perShrd {
		sh.sweep(now, l.idle)
	}
	if len(sh.devices) >= l.perShrd {
		for dev := range sh.devices { // an arbitrary one
			delete(sh.devices, dev)
			break
		}
	}
	b := &bucket{lim: rate.NewLimiter(l.rate, l.burst), last: now, since: now}
	sh.devices[device] = b
	return b
}

// sweep forgets the devices idle for at least idle: their buckets are full
// again, so a new one is the same. sh.mu is held.
func (sh *shard) sweep(now time.Time, idle time.Duration) {
	sh.lastSweep = now
	for dev, b := range sh.devices {
		if now.Sub(b.last) >= idle {
			delete(sh.devices, dev)
		}
	}
}

// count adds one event, let through or not, to the bucket's minute.
func (b *bucket) count(now time.Time, allowed bool, stream string) {
	if allowed {
		b.countN(now, 1, 0, stream)
	} else {
		b.countN(now, 0, 1, stream)
	}
}

// countN adds events let through and over the limit to the bucket's minute.
func (b *bucket) countN(now time.Time, allowed, over int, stream string) {
	b.roll(now)
	b.allowed += allowed
	if over > 0 {
		b.over += over
		b.lastOver, b.lastStream = now, stream
	}
}

// roll starts a new minute-long period if the current one is over.
func (b *bucket) roll(now time.Time) {
	if now.Sub(b.since) < time.Minute {
		return
	}
	if now.Sub(b.since) < 2*time.Minute {
		b.prevAllowed, b.prevOv = b.allowed, b.over
		b.since = b.since.Add(time.Minute)
	} else {
		b.prevAllowed, b.prevOv = 0, 0
		b.since = now
	}
	b.allowed, b.over = 0, 0
}
