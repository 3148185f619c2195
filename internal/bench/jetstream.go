package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// --compare-jetstream: the HTTP load's batches, byte for byte, published to
// an embedded JetStream (nats-server) with file storage and sync_interval
// always (every message fsync'd before its ack), each batch one message, from
// the same number of connections with one publish in flight each: what
// durably storing the same bytes as one opaque message costs, beside
// holdfast parsing, validating, de-duplicating, indexing and windowing every
// event.

// transportJetStream is the internal transport of the comparison run.
const transportJetStream = "jetstream"

// jetStreamSubject is where the comparison publishes.
const jetStreamSubject = "bench.events"

// startJetStream starts the embedded server and its stream; stop removes it.
func startJetStream() (url string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "holdfast-bench-jetstream-")
	if err != nil {
		return "", nil, err
	}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, SyncAlways: true,
		MaxPayload: 64 << 20, NoLog: true, NoSigs: true,
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	srv.Start()
	stop = func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		os.RemoveAll(dir)
	}
	if !srv.ReadyForConnections(10 * time.Second) {
		stop()
		return "", nil, fmt.Errorf("the embedded JetStream did not start")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		stop()
		return "", nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{
			Name: "BENCH", Subjects: []string{jetStreamSubject}, Storage: jetstream.FileStorage, MaxMsgSize: 64 << 20,
		})
	}
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("the embedded JetStream's stream: %w", err)
	}
	return srv.ClientURL(), stop, nil
}

// newJetStreamDriver is the HTTP driver publishing its batches to JetStream
// instead of posting them: one connection per worker.
func newJetStreamDriver(r *run, url string) (*httpDriver, error) {
	d := newHTTPDriver(r, "")
	pubs := make([]jetstream.JetStream, len(d.workers))
	var conns []*nats.Conn
	for i := range pubs {
		nc, err := nats.Connect(url)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, nc)
		if pubs[i], err = jetstream.New(nc); err != nil {
			return nil, err
		}
	}
	index := map[*httpWorker]int{}
	for i, w := range d.workers {
		index[w] = i
	}
	d.send = func(ctx context.Context, w *httpWorker, n int) (ingestResponse, int, string, error) {
		if _, err := pubs[index[w]].Publish(ctx, jetStreamSubject, w.body); err != nil {
			return ingestResponse{}, 0, "publish", err
		}
		return ingestResponse{Accepted: n}, 200, "", nil
	}
	d.closeConns = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	return d, nil
}

// compareJetStream runs o's load against an embedded JetStream and adds it
// to rep as the comparison.
func compareJetStream(ctx context.Context, o Options, rep *Report) (*Report, error) {
	url, stop, err := startJetStream()
	if err != nil {
		return rep, fmt.Errorf("--compare-jetstream: %w", err)
	}
	defer stop()
	if o.Notices != nil {
		fmt.Fprintf(o.Notices, "bench: the same batches to an embedded JetStream (sync_interval always) at %s to compare\n", url)
	}
	c := o
	c.Transport, c.Target, c.CompareJetStream, c.NodeBinary, c.NodeArgs = transportJetStream, url, false, "", nil
	cmp, err := runOnce(ctx, c)
	if cmp != nil {
		cmp.Compared = true
		rep.Compare = cmp
		if cmp.Throughput > 0 {
			rep.CompareRatio = math.Round(rep.Throughput/cmp.Throughput*100) / 100
		}
	}
	if err != nil {
		return rep, fmt.Errorf("--compare-jetstream: %w", err)
	}
	return rep, nil
}
