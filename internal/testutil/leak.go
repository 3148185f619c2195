package testutil

import "go.uber.org/goleak"

// IgnoreNATSSourceSetup lets a leak check pass over the one nats-server
// goroutine that can outlive Shutdown and WaitForShutdown: the goroutine
// stream.trySetupSourceConsumer starts to wait, up to 30 s and with no way to
// stop it early, for the answer to a source consumer request. cloud.Start
// waits until the initial set-up is done, but nats-server sets a source up
// again whenever its health check finds it stalled (a loaded machine can
// starve its heartbeats), and a server closed meanwhile leaves that goroutine
// behind. Only that function, at the top of the goroutine's stack, is ignored.
func IgnoreNATSSourceSetup() goleak.Option {
	return goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3")
}
