package hacluster_test

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/hacluster"
	"github.com/holdfast-edge/holdfast/internal/hacluster/hatest"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.IgnoreToxiproxyStuckPipe()) }

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkBucket writes through member 0 and reads the value back through the
// others: the bucket is replicated on all three.
func checkBucket(t *testing.T, ctx context.Context, c *hatest.Cluster) {
	t.Helper()
	kv0 := c.KV(ctx, t, 0)
	st, err := kv0.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; n != 3 {
		t.Fatalf("replicas %d, want 3", n)
	}
	rev, err := kv0.Put(ctx, "k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		kv := c.KV(ctx, t, i)
		e, err := kv.Get(ctx, "k")
		if err != nil || string(e.Value()) != "v" || e.Revision() != rev {
			t.Fatalf("m%d: get k: %v %v", i, e, err)
		}
	}
}

func TestThreeMembersShareTheBucket(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	c := hatest.Start(t, nil)
	start := time.Now()
	checkBucket(t, ctx, c)
	t.Logf("bucket ready %v after start", time.Since(start))
	testutil.Eventually(t, "every member sees both others", func() bool {
		for i := range 3 {
			ps := c.M[i].Peers()
			if len(ps) != 2 || !ps[0].Connected || !ps[1].Connected {
				return false
			}
		}
		return true
	})

	// Two of three keep the bucket working.
	c.M[2].Close()
	kv0 := c.KV(ctx, t, 0)
	if _, err := kv0.Put(ctx, "k", []byte("w")); err != nil {
		t.Fatalf("put with two of three: %v", err)
	}
	testutil.Eventually(t, "m0 to see m2 gone", func() bool {
		ps := c.M[0].Peers()
		return len(ps) == 2 && ps[0] == (hacluster.PeerState{Name: "m1", Connected: true}) &&
			ps[1] == (hacluster.PeerState{Name: "m2", Connected: false})
	})
}

func TestMemberWithoutSecretCannotJoin(t *testing.T) {
	for _, tc := range []struct{ name, secret string }{{"wrong secret", "guess"}, {"no secret", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			c := hatest.Start(t, func(i int, o *hacluster.Options) {
				if i == 2 {
					o.Secret = tc.secret
				}
			})
			ctx := testCtx(t, 3*time.Second)
			if _, err := c.M[2].KV(ctx); err == nil {
				t.Fatal("m2 without the secret reached the bucket")
			}
			// The two with the secret see only each other, and their
			// bucket cannot be created (it needs three). m2 keeps trying,
			// and a route it is being refused on can show for the moment
			// of its handshake; a route it had joined on would stay, so
			// each member is sampled ten times over a second, and one
			// seen connected twice in a row has let m2 in.
			for i := range 2 {
				before := false
				for range 10 {
					now := false
					for _, p := range c.M[i].Peers() {
						now = now || p.Name == "m2" && p.Connected
					}
					if before && now {
						t.Fatalf("m%d has a route to m2", i)
					}
					before = now
					time.Sleep(100 * time.Millisecond)
				}
			}
			if n := c.M[2].NATS().NumRoutes(); n != 0 {
				t.Fatalf("m2 has %d routes", n)
			}
		})
	}
}

func TestRoutesOverTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "holdfast-ha")
	other := tlstest.NewCA(t, "someone else")
	cfg := func(ca *tlstest.CA, name string) *tls.Config {
		srv, cli := ca.Server(t, name).TLS(t), ca.Client(t, name).TLS(t)
		return &tls.Config{
			Certificates:         []tls.Certificate{srv},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cli, nil },
			ClientCAs:            ca.Pool(),
		}
	}
	t.Run("same CA", func(t *testing.T) {
		c := hatest.Start(t, func(i int, o *hacluster.Options) { o.TLS = cfg(ca, o.Name) })
		checkBucket(t, testCtx(t, 20*time.Second), c)
	})
	t.Run("foreign CA", func(t *testing.T) {
		c := hatest.Start(t, func(i int, o *hacluster.Options) {
			if i == 2 {
				o.TLS = cfg(other, o.Name)
			} else {
				o.TLS = cfg(ca, o.Name)
			}
		})
		if _, err := c.M[2].KV(testCtx(t, 3*time.Second)); err == nil {
			t.Fatal("m2 with a certificate of another CA reached the bucket")
		}
		if n := c.M[2].NATS().NumRoutes(); n != 0 {
			t.Fatalf("m2 has %d routes", n)
		}
	})
}

func TestValidate(t *testing.T) {
	ok := hacluster.Options{Name: "a", Listen: "127.0.0.1:0", Peers: []string{"127.0.0.1:1"}, DataDir: t.TempDir()}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, o := range []hacluster.Options{
		{Listen: "127.0.0.1:0", DataDir: "d"},
		{Name: "a", DataDir: "d"},
		{Name: "a", Listen: "127.0.0.1", DataDir: "d"},
		{Name: "a", Listen: "127.0.0.1:0"},
		{Name: "a", Listen: "127.0.0.1:0", DataDir: "d"},
		{Name: "a", Listen: "127.0.0.1:0", DataDir: "d", Peers: []string{"127.0.0.1:0"}},
		{Name: "a", Listen: "127.0.0.1:0", DataDir: "d", TLS: &tls.Config{}},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestCloseIsFinal(t *testing.T) {
	m, err := hacluster.Start(hacluster.Options{Name: "a", Listen: "127.0.0.1:0", Peers: []string{hatest.Unreachable},
		DataDir: filepath.Join(t.TempDir(), "a")})
	if err != nil {
		t.Fatal(err)
	}
	if m.ClusterAddr() == "" {
		t.Fatal("no cluster address")
	}
	m.Close()
	m.Close()
	if _, err := m.KV(context.Background()); !errors.Is(err, hacluster.ErrClosed) {
		t.Fatalf("KV after Close: %v", err)
	}
}

func TestUnauthenticated(t *testing.T) {
	for _, tc := range []struct {
		listen, secret string
		want           bool
	}{
		{"127.0.0.1:7420", "", false},
		{"localhost:7420", "", false},
		{"[::1]:7420", "", false},
		{":7420", "", true},
		{"0.0.0.0:7420", "", true},
		{"10.0.0.5:7420", "", true},
		{"edge-a:7420", "", true},
		{"0.0.0.0:7420", "s", false},
	} {
		if got := (hacluster.Options{Listen: tc.listen, Secret: tc.secret}).Unauthenticated(); got != tc.want {
			t.Errorf("%s secret %q: %v, want %v", tc.listen, tc.secret, got, tc.want)
		}
	}
}

func TestLeadBucket(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	c := hatest.Start(t, nil)
	c.KV(ctx, t, 0)
	for _, i := range []int{1, 2, 0} {
		if err := c.M[i].LeadBucket(ctx); err != nil {
			t.Fatalf("m%d: %v", i, err)
		}
		st, err := c.M[i].JetStream().Stream(ctx, "KV_"+hacluster.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		if l := st.CachedInfo().Cluster.Leader; l != c.Opts[i].Name {
			t.Fatalf("leader %s, want m%d", l, i)
		}
	}
}
