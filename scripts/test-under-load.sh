#!/usr/bin/env bash
# Runs the README's test command several times in a row while other processes
# keep the CPU busy, to show the suite holds on a loaded machine
# (docs/BENCHMARKS.md, "The test suite under load").
#
# Usage: scripts/test-under-load.sh [runs] [burners]   (defaults 5 and 1)
#
# Each burner is a shell busy loop at normal priority: one takes a whole core.
# Every run is `go test -count=1 ./...`; its output goes to
# $TMPDIR/holdfast-load-run-N.log. The script stops at the first failing run
# and exits non-zero; it prints each run's result and wall time.
set -uo pipefail
runs=${1:-5}
burners=${2:-1}
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq "$burners"); do
	sh -c 'while :; do :; done' &
	pids+=($!)
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)"
echo "burners: $burners busy loop(s); runs: $runs; started $(date -u +%FT%TZ)"
for i in $(seq "$runs"); do
	log="${TMPDIR:-/tmp}/holdfast-load-run-$i.log"
	start=$(date +%s)
	if HOLDFAST_REQUIRE_MOSQUITTO=${HOLDFAST_REQUIRE_MOSQUITTO:-1} go test -count=1 ./... >"$log" 2>&1; then
		result=passed
	else
		result=FAILED
	fi
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	echo "run $i: $result in $(($(date +%s) - start)) s (load average $load; log $log)"
	if [ "$result" = FAILED ]; then
		grep -E '^(--- FAIL|FAIL|panic)' "$log" | head -20
		exit 1
	fi
done
echo "all $runs runs passed, finished $(date -u +%FT%TZ)"
