// Package site is the membership of a holdfast site of several edge nodes and
// the assignment of devices to them (docs/format/site.md). It is a library:
// the node wires a Membership's view into an Assigner to decide, per request,
// whether a device's events are its own or redirected.
//
// # Membership
//
// hashicorp/memberlist runs the membership: SWIM failure detection (direct
// and indirect probes, suspicion that a live member refutes) and gossip of
// each member's metadata (HTTP and MQTT addresses, zone, load). memberlist,
// not a membership kept in a JetStream KV bucket as the HA pair keeps its
// leader record, because membership needs no agreement: every member
// decides alone whom it sees, so a site keeps working when half its nodes
// die, where a replicated KV needs a majority to accept any write. Gossip is
// encrypted and authenticated with memberlist's keyring (AES-256-GCM, one key
// derived from site.secret with HKDF-SHA256), and labelled "holdfast-site";
// only a loopback listener may go without a secret. Options.FailureDetection
// maps onto memberlist's probe and suspicion timers (failureDetection).
//
// # Assignment
//
// Owner is a pure function of the strategy, the view passed in and the
// device, so every node computing it from the same view gets the same answer.
// All four strategies are rendezvous (highest random weight) hashing on
// xxhash, over different candidates and weights:
//
//   - sticky: over all members. A join moves exactly the devices the new
//     member wins, about 1/(N+1); a leave exactly the leaver's. Consistent
//     hashing with bounded loads (buraksezer/consistent) was measured first
//     and dropped: bounding partitions per member makes a change cascade
//     partitions between members that stay, so what a change moves depends
//     on the node ids: of the configurations measured, all but one exceeded
//     1/(N+1) + 5 % on some join or leave from 1 to 8 members for some
//     naming scheme of node ids (the one had 0.1 % to spare), where
//     rendezvous hashing stayed at least 2 % inside it for every scheme and needs no ring to build or cache (Owner costs
//     ~130 ns at 8 members).
//   - load: weighted by 1/(1+level), level 0..7 from max(CPU, Buffer) and
//     the events rate relative to the site's mean (LoadLevel). A lighter
//     member takes proportionally more devices and a load change moves only a
//     share of them — "always the least loaded node", evaluated without
//     state, would send every device to one node and move all of them at
//     every change.
//   - geographic: load-weighted among the members of the device's zone;
//     all members when none of the zone is alive.
//   - semantic: the first rule matching the device and stream names the
//     candidates (nodes or a zone); plain rendezvous among them; sticky over
//     all members when no rule matches or none of its candidates is alive.
//
// While views differ (gossip not yet converged) two nodes may name different
// owners; the node redirects once and the node a redirect lands on accepts,
// so each event is stored by exactly one node (docs/format/site.md).
package site
