package aggregator

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testutil.IgnoreNATSSourceSetup(), testutil.IgnoreNATSAsyncPublisherOnClosed())
}
