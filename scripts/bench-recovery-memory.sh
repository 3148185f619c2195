#!/usr/bin/env bash
# Measures the peak RSS of `holdfast recover --from-cloud` with the real
# binary (docs/BENCHMARKS.md, "Recovery in bounded memory"):
#
#   1. a local cloud and a node syncing to it;
#   2. [events] events from [devices] devices over HTTP (rounds of 1 000 000),
#      until every record is processed and synced; the node stops (SIGTERM);
#   3. `holdfast recover --from-cloud` into a new data directory, under
#      /usr/bin/time -v: its report, and its peak RSS (maximum resident set).
#
# Usage: scripts/bench-recovery-memory.sh [events] [devices]   (defaults 10000000 100000)
# RECOVER_BINS="a b ..." recovers once with each of these holdfast binaries
# (say, an older build) from the same cloud, instead of with this tree's.
# Everything runs on 127.0.0.1 in a temporary directory, removed at the end.
set -euo pipefail
events=${1:-10000000}
devices=${2:-100000}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
bin=$tmp/holdfast
go build -o "$bin" ./cmd/holdfast
dir=$tmp/run
mkdir -p "$dir"
cloud_port=14298 http=127.0.0.1:18098
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
status() { curl -sf "http://$http/v1/status"; }

"$bin" cloud --data-dir "$dir/cloud" --listen "127.0.0.1:$cloud_port" >"$dir/cloud.log" 2>&1 &
pids+=($!)
sleep 1
# A backlog of many millions of records: the buffer may hold it, and the
# node does not step down to "limited" (which holds events back from sync)
# when the two shared cores make its acks slow.
printf 'buffer:\n  max_bytes: 64GiB\ndegradation:\n  limited: {cpu: 0, ack_p99: 0s, queue: 0}\n' >"$dir/node.yaml"
"$bin" run --config "$dir/node.yaml" --data-dir "$dir/a" --node-id bench-site --http-addr "$http" --mqtt-mode off \
	--cloud-url "nats://127.0.0.1:$cloud_port" >"$dir/node.log" 2>&1 &
node=$!
pids+=($node)
sleep 1
# In rounds of at most 1 000 000 events, each synced before the next: sync
# is slower than ingest here, and a backlog of several million records would
# put the node's buffer under pressure (refused events).
for ((left = events; left > 0; left -= 1000000)); do
	n=$((left < 1000000 ? left : 1000000))
	"$bin" bench ingest --target "$http" --devices "$devices" --count "$n" --batch 1000 --quiet | grep throughput
	until status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["sinks"][0]["lag_records"]==0 and s["processing"]["lag_records"]==0 else 1)'; do sleep 0.5; done
done
kill -TERM "$node"; wait "$node" || true
du -sh "$dir/a" "$dir/cloud" | sed 's/^/disk /'

for b in ${RECOVER_BINS:-$bin}; do
	echo "--- recover from the cloud: $b"
	rm -rf "$dir/b"
	/usr/bin/time -v -o "$dir/time" "$b" recover --from-cloud --node-id bench-site \
		--cloud-url "nats://127.0.0.1:$cloud_port" --data-dir "$dir/b" 2>/dev/null
	grep -E "Maximum resident|Elapsed|User time|System time" "$dir/time" | sed 's/^\t//'
done
