// Package cloud is holdfast's cloud side of sync: the NATS JetStream layout
// nodes forward to (docs/format/cloud.md) and an embedded server that hosts it.
//
// It promises:
//   - one subject per (node, kind, stream), holdfast.<node>.<kind>.<stream>,
//     with names encoded canonically into single subject tokens (SubjectToken);
//   - a layout — three data streams with a Nats-Msg-Id de-duplication window,
//     a config registry whose every version is kept, a snapshot object store —
//     that EnsureLayout creates or updates idempotently on any JetStream;
//   - a resume position read from the streams themselves (LastOffset,
//     StoredOffsets), so a node re-sends nothing the cloud already holds,
//     however long it was cut off;
//   - Start/Close of an in-process server that leaves nothing running.
//
// nats-server and nats.go do the work: this package only names things, sets
// them up and asks JetStream questions.
package cloud
