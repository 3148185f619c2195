package auth

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// LimiterOptions configures a Limiter. Zero fields take the defaults.
type LimiterOptions struct {
	// Burst is how many failures a source may have at once (default 10),
	// Every how often it earns one more back (default 6s: 10 a minute).
	Burst int
	Every time.Duration
	// MaxSources bounds the sources tracked (default 10000). When full, idle
	// sources are forgotten first, then the one whose last failure is oldest.
	MaxSources int
}

// Limiter throttles failed authentications per source address: IPv4 by
// address, IPv6 by /64, since one host easily has a whole /64. Successes
// cost nothing. Its memory is bounded by MaxSources whatever the number of
// addresses failing. Safe for concurrent use.
//
//	if !lim.Allow(addr) { metrics.RateLimited(transport); refuse }
//	if _, err := a.Device(token); err != nil { lim.Failure(addr); metrics.Failure(transport, err); refuse }
type Limiter struct {
	opts LimiterOptions
	now  func() time.Time // tests
	mu   sync.Mutex
	// sources maps a source key to its failure budget. Lock held.
	sources map[string]*source
}

type source struct {
	lim  *rate.Limiter
	last time.Time // last failure
}

// NewLimiter returns a Limiter with opts' defaults filled in.
func NewLimiter(opts LimiterOptions) *Limiter {
	if opts.Burst <= 0 {
		opts.Burst = 10
	}
	if opts.Every <= 0 {
		opts.Every = 6 * time.Second
	}
	if opts.MaxSources <= 0 {
		opts.MaxSources = 10000
	}
	return &Limiter{opts: opts, now: time.Now, sources: map[string]*source{}}
}

// Allow reports whether an attempt from addr ("host:port" or a bare host)
// may be checked: false once the source has spent its failures.
func (l *Limiter) Allow(addr string) bool {
	k := sourceKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sources[k]
	return s == nil || s.lim.TokensAt(l.now()) >= 1
}

// Failure records a failed authentication from addr.
func (l *Limiter) Failure(addr string) {
	k := sourceKey(addr)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sources[k]
	if s == nil {
		if len(l.sources) >= l.opts.MaxSources {
			l.evict(now)
		}
		s = &source{lim: rate.NewLimiter(rate.Every(l.opts.Every), l.opts.Burst)}
		l.sources[k] = s
	}
	s.last = now
	s.lim.AllowN(now, 1)
}

// evict forgets the sources whose budget has refilled (they are as good as
// new), or else the one whose last failure is oldest. Lock held.
func (l *Limiter) evict(now time.Time) {
	var oldest string
	for k, s := range l.sources {
		if s.lim.TokensAt(now) >= float64(l.opts.Burst) {
			delete(l.sources, k)
		} else if oldest == "" || s.last.Before(l.sources[oldest].last) {
			oldest = k
		}
	}
	if len(l.sources) >= l.opts.MaxSources {
		delete(l.sources, oldest)
	}
}

// Len returns how many sources are tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}

// sourceKey is the address a budget belongs to: the IP without the port,
// an IPv6 address's /64; anything unparsable as itself, cut to 64 bytes.
func sourceKey(addr string) string {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if len(host) > 64 {
			host = host[:64]
		}
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
