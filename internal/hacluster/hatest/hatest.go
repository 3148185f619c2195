// Package hatest runs the three members of an HA cluster in one test process,
// on 127.0.0.1, each route through its own proxy so a test can cut the links
// between any two members and heal them again.
package hatest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/holdfast-edge/holdfast/internal/hacluster"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// Unreachable is advertised by every member: a member that learns of another
// from a third one cannot dial it there, so members reach each other only
// through the proxies.
const Unreachable = "127.0.0.1:1"

// Cluster is three members, M[i] named "m<i>", with a proxy for each
// direction of each pair.
type Cluster struct {
	M     [3]*hacluster.Member
	Opts  [3]hacluster.Options
	proxy [3][3]*toxiproxy.Proxy // proxy[i][j] carries routes i dials to j
}

// Start starts three members with secret "s3cret" in t's temporary
// directories; edit, if given, may change each member's options. The members
// and proxies are closed when the test ends.
func Start(t testing.TB, edit func(i int, o *hacluster.Options)) *Cluster {
	t.Helper()
	c := &Cluster{}
	ports := FreeAddrs(t, 3)
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	for i := range 3 {
		for j := range 3 {
			if i == j {
				continue
			}
			p := toxiproxy.NewProxy(api, fmt.Sprintf("m%d-m%d", i, j), "127.0.0.1:0", ports[j])
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Stop)
			c.proxy[i][j] = p
		}
	}
	dir := t.TempDir()
	for i := range 3 {
		o := hacluster.Options{
			Name:      fmt.Sprintf("m%d", i),
			Listen:    ports[i],
			Advertise: Unreachable,
			Secret:    "s3cret",
			DataDir:   filepath.Join(dir, fmt.Sprintf("m%d", i)),
		}
		for j := range 3 {
			if j != i {
				o.Peers = append(o.Peers, c.proxy[i][j].Listen)
			}
		}
		if edit != nil {
			edit(i, &o)
		}
		c.Opts[i] = o
	}
	for i := range 3 {
		c.Restart(t, i)
	}
	return c
}

// Restart starts member i again with its options (after Close).
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	m, err := hacluster.Start(c.Opts[i])
	if err != nil {
		t.Fatalf("start m%d: %v", i, err)
	}
	t.Cleanup(m.Close)
	c.M[i] = m
}

// Cut breaks the links between members i and j, both ways, and refuses new
// ones until Heal.
func (c *Cluster) Cut(i, j int) {
	c.proxy[i][j].Stop()
	c.proxy[j][i].Stop()
}

// Heal lets members i and j connect again.
func (c *Cluster) Heal(t testing.TB, i, j int) {
	t.Helper()
	for _, p := range []*toxiproxy.Proxy{c.proxy[i][j], c.proxy[j][i]} {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
}

// KV waits for member i's bucket.
func (c *Cluster) KV(ctx context.Context, t testing.TB, i int) jetstream.KeyValue {
	t.Helper()
	kv, err := c.M[i].KV(ctx)
	if err != nil {
		t.Fatalf("m%d: %v", i, err)
	}
	return kv
}

// FreeAddrs returns n fixed addresses for members to listen on
// (testutil.FreeAddr: below the ephemeral range, each once per process).
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = testutil.FreeAddr(t)
	}
	return out
}
