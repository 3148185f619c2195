package ha

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// TestHAMemberLinkTLS runs the pair's member link over TLS, each member's
// certificate checked against the pair's CA both ways. A witness whose
// certificate another CA signed cannot join: the pair has no quorum and no
// primary until the witness comes back with the pair's certificate.
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
		witnessArgs: []string{"--tls-cert", badCert, "--tls-key", badKey, "--tls-ca", caFile},
	})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range p.nodes() {
			s, err := m.status()
			require.NoError(t, err)
			require.NotEqual(t, "primary", s.HA.Role, "a primary without the witness's quorum: the foreign certificate was let in")
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.w.kill()
	p.w.args = []string{"--tls-cert", wCert, "--tls-key", wKey, "--tls-ca", caFile}
	p.w.start(t)
	prim, _ := p.paired(t, 90*time.Second)
	status, _, _, err := post(noRedirect, prim, eventJSON("tls-1", "d", 1))
	require.NoError(t, err)
	require.Equal(t, 200, status)
}
