package testutil

import (
	"testing"
	"time"
)

// WaitFor is how long a test waits for something that should happen promptly.
const WaitFor = 30 * time.Second

// Eventually polls cond until it holds, failing the test after WaitFor. Tests
// poll with a deadline rather than sleep and hope.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
