package api

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// LimitPerSource wraps h so that one source address (an IPv6 address by its
// /64, as one host easily has a whole /64) has at most max requests in
// progress; more are answered 429 with Retry-After at once, so one client
// cannot take all the node's connections or memory. Its memory is one map
// entry per source with a request in progress.
func LimitPerSource(h http.Handler, max int) http.Handler {
	var (
		mu       sync.Mutex
		inflight = map[string]int{}
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := sourceKey(r.RemoteAddr)
		mu.Lock()
		if inflight[k] >= max {
			mu.Unlock()
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too many requests in progress from this address (http.max_concurrent_per_source)"})
			return
		}
		inflight[k]++
		mu.Unlock()
		defer func() {
			mu.Lock()
			if inflight[k]--; inflight[k] == 0 {
				delete(inflight, k)
			}
			mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

func sourceKey(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
