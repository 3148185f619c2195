package uplink

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConnectivityValidate(t *testing.T) {
	require.NoError(t, ConnectivityOptions{}.Validate())
	require.NoError(t, ConnectivityOptions{Initial: Offline, OfflineAfter: 5}.Validate())
	err := ConnectivityOptions{Initial: "flaky", OfflineAfter: -1}.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown initial state "flaky"`)
	assert.Contains(t, err.Error(), "offline after -1 failures is negative")
	assert.Panics(t, func() { NewConnectivity(ConnectivityOptions{Initial: "flaky"}) })
}

func TestConnectivityNilError(t *testing.T) {
	c := NewConnectivity(ConnectivityOptions{})
	c.SyncFailed(nil)
	s := c.Snapshot()
	assert.Equal(t, Degraded, s.State)
	assert.Equal(t, "unknown error", s.LastError)
}

// TestConnectivityHookMaySnapshot checks that OnChange runs after the change
// and may read the machine without deadlocking.
func TestConnectivityHookMaySnapshot(t *testing.T) {
	var c *Connectivity
	var seen []ConnectivitySnapshot
	c = NewConnectivity(ConnectivityOptions{
		OnChange: func(from, to State, at time.Time) { seen = append(seen, c.Snapshot()) },
	})
	c.SyncFailed(errors.New("down"))
	require.Len(t, seen, 1)
	assert.Equal(t, Degraded, seen[0].State)
	assert.Equal(t, 1, seen[0].ConsecutiveFailures)
}

// TestConnectivityConcurrent sends events from many goroutines and checks
// that the hooks saw an unbroken chain of transitions that ends in the final
// state, one per counted transition.
func TestConnectivityConcurrent(t *testing.T) {
	var chain []State // guarded by the hook being called serially
	c := NewConnectivity(ConnectivityOptions{
		OnChange: func(from, to State, _ time.Time) {
			if len(chain) == 0 {
				chain = append(chain, from)
			}
			if chain[len(chain)-1] != from {
				t.Errorf("transition %s>%s after %s", from, to, chain[len(chain)-1])
			}
			chain = append(chain, to)
		},
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				switch (g + i) % 4 {
				case 0, 1:
					c.SyncFailed(errors.New("down"))
				case 2:
					c.Restored()
				case 3:
					c.SyncSucceeded()
				}
				_ = c.Snapshot()
			}
		})
	}
	wg.Wait()
	s := c.Snapshot()
	require.NotEmpty(t, chain)
	assert.Equal(t, Connected, chain[0])
	assert.Equal(t, s.State, chain[len(chain)-1])
	assert.Equal(t, uint64(len(chain)-1), s.Transitions)
}
