package alert

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor is how long a test waits for something that should happen promptly.
const waitFor = testutil.WaitFor

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, what, cond)
}
