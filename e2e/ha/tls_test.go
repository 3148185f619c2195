package ha

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// TestHAMemberLinkTLS runs the pair's member link over TLS, each member's
// certificate checked against the pair's CA both ways: the pair forms and
// takes writes. A witness whose certificate another CA signed, started in
// the witness's place, gets no link to either node.
func TestHAMemberLinkTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("HA test skipped in -short mode")
	}
	dir := t.TempDir()
	ca, other := tlstest.NewCA(t, "holdfast pair"), tlstest.NewCA(t, "someone else")
	caFile := ca.WriteCA(t, dir, "ca")
	nodeCert, nodeKey := ca.Member(t, "node").Write(t, dir, "node")
	wCert, wKey := ca.Member(t, "witness").Write(t, dir, "witness")
	badCert, badKey := other.Member(t, "witness").Write(t, dir, "impostor")

	p := newPairWith(t, pairOptions{
		haExtra:     "  tls: {cert: " + nodeCert + ", key: " + nodeKey + ", ca: " + caFile + "}\n",
		witnessArgs: []string{"--tls-cert", wCert, "--tls-key", wKey, "--tls-ca", caFile},
	})
	prim, _ := p.paired(t, 90*time.Second)
	status, _, _, err := post(noRedirect, prim, eventJSON("tls-1", "d", 1))
	require.NoError(t, err)
	require.Equal(t, 200, status)
	p.settled(t) // both nodes' links to the witness are up

	p.w.kill()
	witnessDown := func() bool {
		for _, m := range p.nodes() {
			s, err := m.status()
			if err != nil {
				return false
			}
			for _, l := range s.HA.Links {
				if l.Member == "witness" && l.Connected {
					return false
				}
			}
		}
		return true
	}
	killed := time.Now()
	for !witnessDown() {
		require.Less(t, time.Since(killed), 60*time.Second, "the nodes still see a link to the killed witness")
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("links to the killed witness down after %v", time.Since(killed))
	p.w.args = []string{"--tls-cert", badCert, "--tls-key", badKey, "--tls-ca", caFile}
	p.w.start(t)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range p.nodes() {
			s, err := m.status()
			require.NoError(t, err)
			for _, l := range s.HA.Links {
				if l.Member == "witness" {
					require.False(t, l.Connected, "%s has a link to a witness another CA signed", m.name)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}
