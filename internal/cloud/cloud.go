// Package cloud is holdfast's cloud side of sync: the NATS JetStream layout
// nodes forward to (docs/format/cloud.md) and an embedded server that hosts it.
//
// It promises:
//   - one subject per (node, kind, stream), holdfast.<node>.<kind>.<stream>,
//     with names encoded canonically into single subject tokens (SubjectToken);
//   - a layout — three data streams with a Nats-Msg-Id de-duplication window,
//     a config registry whose every version is kept, a snapshot object store —
//     that EnsureLayout creates or updates idempotently on any JetStream;
//   - the questions a node asks the streams so that it stores every record
//     once however long it was cut off and however late a publish lands
//     (LastSubjectSeq, SubjectStored: what is stored on one of its subjects
//     after the sequence its publishes expect), and the ones a reader asks
//     (LastOffset, StoredOffsets);
//   - Start/Close of an in-process server that leaves nothing running.
//
// nats-server and nats.go do the work: this package only names things, sets
// them up and asks JetStream questions.
package cloud
