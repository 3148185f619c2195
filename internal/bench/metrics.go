package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	rssInterval   = 250 * time.Millisecond
	scrapeTimeout = 5 * time.Second
)

// nodeMetrics is what the bench reads from the node's /metrics.
type nodeMetrics struct {
	rss      float64            // process_resident_memory_bytes
	cpu      float64            // process_cpu_seconds_total
	accepted map[string]float64 // holdfast_events_accepted_total by transport
	rejected map[string]float64 // holdfast_events_rejected_total by transport, all reasons
}

// scraper reads a node's Prometheus metrics.
type scraper struct {
	url       string
	transport *http.Transport // its own: a scrape must not queue behind the load
	client    *http.Client
	token     string // API token (role read) for a node with security on
	off       bool   // the target is not holdfast: nothing to read
}

// errNoMetrics is the scrape error for a target that is not holdfast.
var errNoMetrics = errors.New("not a holdfast node (--http-target none): the generator's own figures only")

func newScraper(addr, token string) *scraper {
	t := &http.Transport{MaxIdleConnsPerHost: 1}
	return &scraper{url: "http://" + addr + "/metrics", transport: t, client: &http.Client{Timeout: scrapeTimeout, Transport: t}, token: token, off: addr == NoMetrics}
}

func (s *scraper) close() { s.transport.CloseIdleConnections() }

func (s *scraper) scrape(ctx context.Context) (nodeMetrics, error) {
	if s.off {
		return nodeMetrics{}, errNoMetrics
	}
	if s.url == "http:///metrics" {
		return nodeMetrics{}, errors.New("no HTTP address for the node's metrics (--http-target)")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nodeMetrics{}, err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nodeMetrics{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nodeMetrics{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return nodeMetrics{}, fmt.Errorf("GET %s: %s", s.url, resp.Status)
	}
	return parseMetrics(body)
}

// parseMetrics reads the few series the bench needs from the Prometheus text
// format.
func parseMetrics(body []byte) (nodeMetrics, error) {
	m := nodeMetrics{rss: -1, accepted: map[string]float64{}, rejected: map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series, val := line[:sp], line[sp+1:]
		name, labels, _ := strings.Cut(series, "{")
		var dst map[string]float64
		switch name {
		case "process_resident_memory_bytes":
			v, err := strconv.ParseFloat(val, 64)
			if err == nil {
				m.rss = v
			}
			continue
		case "process_cpu_seconds_total":
			v, err := strconv.ParseFloat(val, 64)
			if err == nil {
				m.cpu = v
			}
			continue
		case "holdfast_events_accepted_total":
			dst = m.accepted
		case "holdfast_events_rejected_total":
			dst = m.rejected
		default:
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		dst[labelValue(labels, "transport")] += v
	}
	if m.rss < 0 {
		return m, errors.New("the node's /metrics has no process_resident_memory_bytes")
	}
	return m, sc.Err()
}

// labelValue returns the value of label name in `a="x",b="y"}`.
func labelValue(labels, name string) string {
	_, rest, ok := strings.Cut(labels, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// rssSampler reads the node's resident memory every rssInterval and keeps the
// peak. Its fields are read only after run has returned.
type rssSampler struct {
	sc      *scraper
	pid     int // a node the bench started: read its RSS from /proc, not /metrics
	peak    uint64
	samples int
}

func (s *rssSampler) run(ctx context.Context) {
	t := time.NewTicker(rssInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A node's /metrics is large; parsing it four times a second would
		// cost the generator more CPU than the load it sends.
		rss, err := procRSS(s.pid)
		if err != nil {
			m, serr := s.sc.scrape(ctx)
			if serr != nil {
				continue
			}
			rss = uint64(m.rss)
		}
		s.samples++
		s.peak = max(s.peak, rss)
	}
}
