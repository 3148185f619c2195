package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// SiteOptions configure `holdfast bench site`: for each size in Nodes, a
// site of that many nodes (and an aggregator) on this machine, loaded by
// devices that each send to the node that owns them.
type SiteOptions struct {
	Binary      string        // the holdfast binary
	Nodes       []int         // site sizes to measure, e.g. 1, 2, 3
	Devices     int           // simulated devices (default 300)
	Duration    time.Duration // load per site size (default 10s)
	Batch       int           // devices (one event each) per round (default 100)
	Connections int           // concurrent requests over the site (default 8)
	Assign      string        // assignment strategy (default sticky)
	Aggregator  bool          // run an aggregator the nodes sync to
	Notices     io.Writer     // progress notices (nil: none)
}

// SiteNode is one node's share of a site run.
type SiteNode struct {
	NodeID       string  `json:"node_id"`
	Devices      int     `json:"devices"`
	Acked        int64   `json:"acked"`
	EventsPerSec float64 `json:"events_per_s"`
	Share        float64 `json:"share"`
}

// SiteRun is one site size's result.
type SiteRun struct {
	Nodes        int        `json:"nodes"`
	Seconds      float64    `json:"seconds"`
	Acked        int64      `json:"acked"`
	Errors       int64      `json:"errors"`
	EventsPerSec float64    `json:"events_per_s"`
	PerNode      []SiteNode `json:"per_node"`
	// Moved is the share of devices whose owner changed when this size's
	// last node joined, MovedOnLeave when it left again (0 for one node).
	Moved        float64 `json:"moved_on_join"`
	MovedOnLeave float64 `json:"moved_on_leave"`
}

// SiteReport is the result of a site bench.
type SiteReport struct {
	Devices int       `json:"devices"`
	Batch   int       `json:"batch"`
	Assign  string    `json:"assign"`
	Runs    []SiteRun `json:"runs"`
}

func (o SiteOptions) withDefaults() SiteOptions {
	if len(o.Nodes) == 0 {
		o.Nodes = []int{1, 2, 3}
	}
	if o.Devices == 0 {
		o.Devices = 300
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Batch == 0 {
		o.Batch = 100
	}
	if o.Connections == 0 {
		o.Connections = 8
	}
	if o.Assign == "" {
		o.Assign = "sticky"
	}
	return o
}

func (o SiteOptions) notef(format string, args ...any) {
	if o.Notices != nil {
		fmt.Fprintf(o.Notices, format+"\n", args...)
	}
}

// RunSite measures each site size in turn.
func RunSite(ctx context.Context, o SiteOptions) (*SiteReport, error) {
	o = o.withDefaults()
	for _, n := range o.Nodes {
		if n < 1 {
			return nil, fmt.Errorf("--nodes: %d: a site has at least one node", n)
		}
	}
	rep := &SiteReport{Devices: o.Devices, Batch: o.Batch, Assign: o.Assign}
	for _, n := range o.Nodes {
		o.notef("site of %d node(s): starting", n)
		r, err := runSite(ctx, o, n)
		if err != nil {
			return rep, fmt.Errorf("site of %d node(s): %w", n, err)
		}
		o.notef("site of %d node(s): %.0f events/s", n, r.EventsPerSec)
		rep.Runs = append(rep.Runs, r)
	}
	return rep, nil
}

// siteNode is a node of a site bench and where it gossips.
type siteNode struct {
	id     string
	proc   *nodeProcess
	gossip string
}

func runSite(ctx context.Context, o SiteOptions, size int) (run SiteRun, err error) {
	run.Nodes = size
	var agg *aggProcess
	if o.Aggregator {
		if agg, err = startAggregator(ctx, o.Binary); err != nil {
			return run, err
		}
		defer func() { err = errors.Join(err, agg.stop()) }()
	}
	var nodes []*siteNode
	defer func() {
		for _, n := range nodes {
			err = errors.Join(err, n.proc.stop())
		}
	}()
	devices := make([]string, o.Devices)
	for i := range devices {
		devices[i] = fmt.Sprintf("dev-%06d", i+1)
	}
	var before map[string]string
	for i := range size {
		gossip, err := freeLoopbackPort()
		if err != nil {
			return run, err
		}
		sn := &siteNode{id: fmt.Sprintf("bench-%d", i+1), gossip: gossip}
		args := []string{"--node-id", sn.id, "--site-listen", gossip, "--assign", o.Assign}
		var peers []string
		for _, p := range nodes {
			peers = append(peers, p.gossip)
		}
		if len(peers) > 0 {
			args = append(args, "--site-peers", strings.Join(peers, ","))
		}
		if agg != nil {
			args = append(args, "--aggregator", "nats://"+agg.nats)
		}
		if i == size-1 && size > 1 {
			// The owners before the last node joins: the share it moves.
			if before, err = owners(ctx, nodes[0].proc.httpAddr, devices); err != nil {
				return run, err
			}
		}
		if sn.proc, err = startNode(ctx, o.Binary, args, false); err != nil {
			return run, err
		}
		nodes = append(nodes, sn)
	}
	if err := waitMembers(ctx, nodes, 30*time.Second); err != nil {
		return run, err
	}
	own, err := owners(ctx, nodes[0].proc.httpAddr, devices)
	if err != nil {
		return run, err
	}
	if before != nil {
		moved := 0
		for d, n := range own {
			if before[d] != n {
				moved++
			}
		}
		run.Moved = float64(moved) / float64(len(devices))
	}
	byNode := map[string][]string{}
	for _, d := range devices {
		byNode[own[d]] = append(byNode[own[d]], d)
	}
	addr := map[string]string{}
	index := map[string]int{}
	for i, n := range nodes {
		addr[n.id], index[n.id] = n.proc.httpAddr, i
	}

	// Rounds over all devices, Batch at a time: each round's events go to
	// their owners, so a node's load follows the devices it owns.
	acked := make([]atomic.Int64, len(nodes))
	var errs atomic.Int64
	var next atomic.Int64
	lctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.Connections}}
	for range o.Connections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bodies := map[string][]byte{}
			for lctx.Err() == nil {
				first := int(next.Add(int64(o.Batch))) - o.Batch
				ts := time.Now().UnixMilli()
				clear(bodies)
				for k := range o.Batch {
					// The value is the event's number: two events of one
					// device within a millisecond differ, or the node would
					// take the second for a retry (docs/format/dedup.md).
					d := devices[(first+k)%len(devices)]
					bodies[own[d]] = fmt.Appendf(bodies[own[d]], `{"device_id":%q,"stream":%q,"ts":%d,"value":%d}`+"\n", d, benchStream, ts, first+k)
				}
				for id, body := range bodies {
					req, _ := http.NewRequestWithContext(lctx, http.MethodPost, "http://"+addr[id]+"/v1/events", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/x-ndjson")
					resp, err := client.Do(req)
					if err != nil {
						if lctx.Err() == nil {
							errs.Add(1)
						}
						continue
					}
					var r struct{ Accepted int64 }
					json.NewDecoder(resp.Body).Decode(&r)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs.Add(1)
						continue
					}
					acked[index[id]].Add(r.Accepted)
				}
			}
		}()
	}
	wg.Wait()
	run.Seconds = time.Since(start).Seconds()
	run.Errors = errs.Load()
	for i, n := range nodes {
		a := acked[i].Load()
		run.Acked += a
		run.PerNode = append(run.PerNode, SiteNode{NodeID: n.id, Devices: len(byNode[n.id]), Acked: a, EventsPerSec: float64(a) / run.Seconds})
	}
	run.EventsPerSec = float64(run.Acked) / run.Seconds
	for i := range run.PerNode {
		if run.Acked > 0 {
			run.PerNode[i].Share = float64(run.PerNode[i].Acked) / float64(run.Acked)
		}
	}
	if size > 1 {
		// The last node leaves (SIGTERM: a graceful leave): the share of
		// devices that move.
		last := nodes[len(nodes)-1]
		nodes = nodes[:len(nodes)-1]
		if err := last.proc.stop(); err != nil {
			return run, err
		}
		if err := waitMembers(ctx, nodes, 30*time.Second); err != nil {
			return run, err
		}
		after, err := owners(ctx, nodes[0].proc.httpAddr, devices)
		if err != nil {
			return run, err
		}
		moved := 0
		for d, n := range after {
			if own[d] != n {
				moved++
			}
		}
		run.MovedOnLeave = float64(moved) / float64(len(devices))
	}
	return run, nil
}

// owners asks the node at addr where each device belongs.
func owners(ctx context.Context, addr string, devices []string) (map[string]string, error) {
	out := make(map[string]string, len(devices))
	for _, d := range devices {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/assign?device_id="+url.QueryEscape(d), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("/v1/assign: %w", err)
		}
		var a struct {
			NodeID string `json:"node_id"`
		}
		err = json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("/v1/assign?device_id=%s: %s %v", d, resp.Status, err)
		}
		out[d] = a.NodeID
	}
	return out, nil
}

// waitMembers waits until every node sees all of them alive.
func waitMembers(ctx context.Context, nodes []*siteNode, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range nodes {
		for {
			var st struct {
				Site *struct {
					Members []struct{ State string }
				}
			}
			alive := 0
			resp, err := http.Get("http://" + n.proc.httpAddr + "/v1/status")
			if err == nil {
				json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
				if st.Site != nil {
					for _, m := range st.Site.Members {
						if m.State == "alive" {
							alive++
						}
					}
				}
			}
			if alive == len(nodes) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s sees %d of %d members alive after %v", n.id, alive, len(nodes), timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// freeLoopbackPort returns a 127.0.0.1 address whose TCP and UDP ports were
// free a moment ago (the gossip takes both).
func freeLoopbackPort() (string, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		u.Close()
		return addr, nil
	}
	return "", errors.New("no free port for the gossip")
}

// aggProcess is the aggregator a site bench started.
type aggProcess struct {
	cmd   *exec.Cmd
	dir   string
	nats  string
	http  string
	tail  *lineTail
	exits chan struct{}
}

func startAggregator(ctx context.Context, binary string) (*aggProcess, error) {
	dir, err := os.MkdirTemp("", "holdfast-bench-agg-")
	if err != nil {
		return nil, err
	}
	natsAddr, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	a := &aggProcess{dir: dir, nats: natsAddr, http: httpAddr, tail: &lineTail{max: tailLines}, exits: make(chan struct{})}
	a.cmd = exec.Command(binary, "aggregate", "--data-dir", dir, "--listen", natsAddr, "--http-addr", httpAddr)
	a.cmd.SysProcAttr = nodeSysProcAttr()
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := a.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start the aggregator: %w", err)
	}
	go func() {
		b := make([]byte, 64<<10)
		var line []byte
		for {
			n, err := stderr.Read(b)
			for _, c := range b[:n] {
				if c == '\n' {
					a.tail.add(string(line))
					line = line[:0]
				} else {
					line = append(line, c)
				}
			}
			if err != nil {
				break
			}
		}
		a.cmd.Wait()
		close(a.exits)
	}()
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return a, nil
		}
		select {
		case <-a.exits:
			return nil, fmt.Errorf("the aggregator exited before it was ready:\n%s", a.tail)
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), a.stop())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("the aggregator was not ready after %v:\n%s", readyTimeout, a.tail), a.stop())
		}
	}
}

func (a *aggProcess) stop() error {
	select {
	case <-a.exits:
	default:
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exits:
		case <-time.After(stopTimeout):
			_ = a.cmd.Process.Kill()
			<-a.exits
		}
	}
	return os.RemoveAll(a.dir)
}

// WriteText writes the report as a table and a chart of total throughput
// by site size.
func (r *SiteReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "site bench: %d devices, rounds of %d devices' events split by owner, %s assignment\n"+
		"  moved j / l: the share of devices whose owner changed when the last node joined, and when it left again\n\n",
		r.Devices, r.Batch, r.Assign)
	fmt.Fprintf(&b, "  %5s  %14s  %13s  %s\n", "nodes", "total events/s", "moved j / l", "per node: events/s (share of the load, devices)")
	top := 0.0
	for _, run := range r.Runs {
		top = max(top, run.EventsPerSec)
		var parts []string
		for _, n := range run.PerNode {
			parts = append(parts, fmt.Sprintf("%s %s (%.0f %%, %d)", n.NodeID, si(n.EventsPerSec), 100*n.Share, n.Devices))
		}
		moved := "-"
		if run.Nodes > 1 {
			moved = fmt.Sprintf("%.1f / %.1f %%", 100*run.Moved, 100*run.MovedOnLeave)
		}
		fmt.Fprintf(&b, "  %5d  %14s  %13s  %s\n", run.Nodes, si(run.EventsPerSec), moved, strings.Join(parts, ", "))
		if run.Errors > 0 {
			fmt.Fprintf(&b, "  %5s  %d failed requests\n", "", run.Errors)
		}
	}
	b.WriteString("\n  total acked events/s by site size\n")
	sorted := slices.Clone(r.Runs)
	for _, run := range sorted {
		bar := 0
		if top > 0 {
			bar = int(run.EventsPerSec / top * 50)
		}
		fmt.Fprintf(&b, "  %2d node(s) |%s %s\n", run.Nodes, strings.Repeat("#", bar), si(run.EventsPerSec))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
