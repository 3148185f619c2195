// Package uplink holds the parts of cloud sync that decide when to try a sink
// and what state the link is in. The sync engine wraps each sink in them; none
// of them does I/O.
//
//   - Connectivity is the network-outage state machine of the seed, written by
//     hand: connected → degraded (a sync failed) → offline (OfflineAfter, default
//     3, consecutive failures) → degraded (connectivity restored) → connected
//     (a sync succeeded). Its clock is injected.
//   - Breaker is a circuit breaker per sink, a thin wrapper over
//     github.com/sony/gobreaker/v2: it opens after Failures (default 5)
//     consecutive failures, fails fast with ErrOpen for OpenTimeout (default
//     30 s), then lets one probe through; the probe's success closes it, its
//     failure opens it again. gobreaker reads the wall clock itself, so the
//     breaker's timeout cannot be driven by a fake clock.
//   - Retry and Backoff time the attempts, built on
//     github.com/cenkalti/backoff/v5: exponential backoff from 100 ms, ×2, at
//     most 60 s, ±10 % jitter, 10 attempts in all (DefaultRetryOptions).
//     Errors are classified as Prometheus remote storage does: Permanent errors
//     are never retried, a RetryableError may say how long to wait (Retry-After),
//     and every other error is retryable.
//   - Metrics exports both machines per sink; Track keeps it true.
//
// Which errors count against a sink: the breaker counts every error as a
// failure except context.Canceled (excluded: neither success nor failure, the
// sink was not asked to the end) and Permanent errors (a success: the sink
// answered, it only refused the data). Connectivity counts what the sync
// engine reports to it.
package uplink
