package uplink

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// TestBreakerHalfOpenEarly: HalfOpen lets one call through before the open
// timeout; its failure opens the breaker again, its success closes it, and
// the hooks see open → half-open → open/closed.
func TestBreakerHalfOpenEarly(t *testing.T) {
	var changes []string
	b := NewBreaker("s", BreakerOptions{Failures: 1, OpenTimeout: time.Hour,
		OnChange: func(from, to string) { changes = append(changes, from+">"+to) }})
	boom := errors.New("boom")
	b.HalfOpen() // closed: nothing
	require.Equal(t, BreakerClosed, b.State())
	require.ErrorIs(t, b.Do(func() error { return boom }), boom)
	require.Equal(t, BreakerOpen, b.State())
	require.ErrorIs(t, b.Do(func() error { return nil }), ErrOpen)

	b.HalfOpen()
	require.Equal(t, BreakerHalfOpen, b.State())
	require.ErrorIs(t, b.Do(func() error { return boom }), boom)
	require.Equal(t, BreakerOpen, b.State())
	require.ErrorIs(t, b.Do(func() error { return nil }), ErrOpen, "open for a whole timeout again")

	b.HalfOpen()
	require.NoError(t, b.Do(func() error { return nil }))
	require.Equal(t, BreakerClosed, b.State())
	require.Equal(t, []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}, changes)
}

// TestSyncResumesWhenTheCloudReturns keeps the seed's retry and breaker
// defaults (60 s longest wait, 30 s open): the cloud is away until the
// breaker has opened and the backoff has grown, and once it is back the
// sync resumes within a few seconds, not after the open timeout.
func TestSyncResumesWhenTheCloudReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the breaker to open")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	startCloud := func() *cloud.Server {
		srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: addr})
		require.NoError(t, err)
		return srv
	}
	srv := startCloud()
	l, err := buffer.Open(buffer.Options{Dir: filepath.Join(dir, "log")})
	require.NoError(t, err)
	defer l.Close()
	s := NewSyncer(l, NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "edge-1"}), SyncOptions{})
	s.Start()
	defer s.Close()
	appendEvents(t, l, 0, 100)
	waitSynced(t, s, l)

	require.NoError(t, srv.Close())
	appendEvents(t, l, 100, 100)
	deadline := time.Now().Add(30 * time.Second)
	for s.Status().Breaker != BreakerOpen {
		require.True(t, time.Now().Before(deadline), "breaker never opened: %+v", s.Status())
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // the backoff grows on
	srv = startCloud()
	defer srv.Close()
	back := time.Now()
	deadline = back.Add(10 * time.Second)
	for s.Status().SyncedOffset < l.DurableOffset() {
		require.True(t, time.Now().Before(deadline), "sync did not resume: %+v", s.Status())
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("sync resumed %v after the cloud returned", time.Since(back).Round(time.Millisecond))
	st := s.Status()
	require.Equal(t, Connected, st.State)
	require.Equal(t, BreakerClosed, st.Breaker)
	require.Empty(t, st.LastError, "cleared once connected again")
}

// TestIdleSinkOutageShows: with nothing to send, an outage still shows in
// the state (the sink is probed), and the return too.
func TestIdleSinkOutageShows(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	startCloud := func() *cloud.Server {
		srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: addr})
		require.NoError(t, err)
		return srv
	}
	srv := startCloud()
	l, err := buffer.Open(buffer.Options{Dir: filepath.Join(dir, "log")})
	require.NoError(t, err)
	defer l.Close()
	s := NewSyncer(l, NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "edge-1"}), SyncOptions{ProbeInterval: 100 * time.Millisecond})
	s.Start()
	defer s.Close()
	appendEvents(t, l, 0, 10)
	waitSynced(t, s, l)
	require.NoError(t, srv.Close())
	deadline := time.Now().Add(10 * time.Second)
	for s.Status().State != Offline {
		require.True(t, time.Now().Before(deadline), "an idle sink never went offline: %+v", s.Status())
		time.Sleep(20 * time.Millisecond)
	}
	srv = startCloud()
	defer srv.Close()
	deadline = time.Now().Add(10 * time.Second)
	for s.Status().State != Connected {
		require.True(t, time.Now().Before(deadline), "an idle sink never came back: %+v", s.Status())
		time.Sleep(20 * time.Millisecond)
	}
}
