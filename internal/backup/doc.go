// Package backup keeps copies of a node's state away from the node: hourly
// snapshots of the processor's newest checkpoint, kept locally and uploaded to
// the cloud, and the node's config published to the cloud's config registry
// (docs/format/checkpoint.md "Snapshots", docs/format/cloud.md "Config
// registry" and "Snapshots").
//
// A snapshot is a byte copy of the newest checkpoint file that decodes
// (process.DecodeCheckpoint; damaged ones are skipped), written atomically as
// <SnapshotDir>/<written_at unix ms>.snap. The newest Keep snapshots are kept.
// Each one is uploaded once; an empty <ms>.snap.uploaded marker next to it
// records that, so a restart uploads only what is still pending. After
// uploading, the cloud copy is pruned to the node's newest Keep.
//
// Nothing here blocks or crashes the node: all cloud work runs on one
// background goroutine, each call bounded by a timeout; a cloud that cannot be
// reached leaves snapshots pending (never more than Keep, since local
// retention applies to them too) and the config unpublished, both retried
// every RetryInterval; errors show in Status().LastError and in the log.
//
// The libraries: nats.go connects to the cloud (lazily, reconnecting by itself
// once connected); its jetstream package's object store holds the snapshots
// (bucket holdfast-snapshots) and its key-value store the config registry
// (bucket holdfast-config), both through the helpers of package cloud
// (PutSnapshot, PruneSnapshots, PutConfig). prometheus/client_golang exports
// the metrics.
package backup
