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

// IgnoreToxiproxyStuckPipe lets a leak check pass over the goroutine
// toxiproxy (v2.12) leaves behind when a proxy is stopped, or a connection
// through it fails, while data is in flight: the pass-through toxic of the
// link blocks forever sending a chunk to the link's writer, which has already
// returned, and never sees its input close. Stopping proxies mid-stream is
// what the fault tests do, so only that function, at the top of the
// goroutine's stack, is ignored.
func IgnoreToxiproxyStuckPipe() goleak.Option {
	return goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe")
}

// IgnoreNATSAsyncPublisherOnClosed lets a leak check pass over the goroutine
// nats.go's JetStream client (v1.55) starts for an asynchronous publish to
// reset pending acks on reconnect, when it is left waiting on a nil channel:
// ObjectStore.Put's deferred cleanup can set the status channel it reads to
// nil before it has read it, and it then waits forever (cloud/snapshots.go,
// settlingReader, makes that rare, not impossible: it happened in a CI run
// with the machine loaded). On a live connection the same goroutine ends
// when the connection closes, so a connection left open still shows as a
// leak through its other goroutines (its read loop, its flusher).
func IgnoreNATSAsyncPublisherOnClosed() goleak.Option {
	return goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect")
}
