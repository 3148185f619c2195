#!/usr/bin/env bash
# Measures restart-to-ready, checkpoint size and time, and recovery from the
# cloud, with the real binary (docs/BENCHMARKS.md, "Restart and recovery"):
#
#   1. a local cloud and a node syncing to it;
#   2. 1 000 000 events from 100 000 devices (300 000 open windows: 1m, 5m, 1h);
#   3. SIGTERM (a checkpoint at shutdown), restart: time to ready and caught up;
#   4. SIGKILL after 20 more seconds of load, restart: the same, with a replay
#      since the last periodic checkpoint;
#   5. the node's data deleted, `holdfast recover --from-cloud`: records/s and
#      its peak RSS (/usr/bin/time -v).
#
# Usage: scripts/bench-recovery.sh [events] [devices]   (defaults 1000000 100000)
# Everything runs on 127.0.0.1 in a temporary directory, removed at the end.
set -euo pipefail
events=${1:-1000000}
devices=${2:-100000}
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/holdfast
go build -o "$bin" ./cmd/holdfast
dir=$(mktemp -d)
cloud_port=14299 http=127.0.0.1:18099
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir" "$(dirname "$bin")"; }
trap cleanup EXIT

status() { curl -sf "http://$http/v1/status"; }
# ready_after START: waits until the node answers and processing is live and
# caught up; prints the seconds since START.
ready_after() {
	python3 - "$1" "$http" <<'EOF'
import json, sys, time, urllib.request
t0, addr = float(sys.argv[1]), sys.argv[2]
while True:
    try:
        p = json.load(urllib.request.urlopen(f"http://{addr}/v1/status"))["processing"]
        if not p["replaying"] and p["lag_records"] == 0:
            print(f"{time.time() - t0:.3f} s, {p['open_windows']} open windows")
            break
    except Exception:
        pass
    time.sleep(0.002)
EOF
}
start_node() {
	"$bin" run --data-dir "$1" --node-id bench-site --http-addr "$http" --mqtt-mode off \
		--cloud-url "nats://127.0.0.1:$cloud_port" >>"$dir/node.log" 2>&1 &
	pids+=($!)
	node=$!
}

"$bin" cloud --data-dir "$dir/cloud" --listen "127.0.0.1:$cloud_port" >"$dir/cloud.log" 2>&1 &
pids+=($!)
sleep 1
start_node "$dir/a"
sleep 1
"$bin" bench ingest --target "$http" --devices "$devices" --count "$events" --batch 1000 --quiet | grep throughput
until status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["sinks"][0]["lag_records"]==0 and s["processing"]["lag_records"]==0 else 1)'; do sleep 0.2; done

echo "--- clean restart (checkpoint at shutdown)"
kill -TERM "$node"; wait "$node" || true
grep "checkpoint written" "$dir/node.log" | tail -1
t=$(date +%s.%N); start_node "$dir/a"; echo "ready and caught up after $(ready_after "$t")"
grep -E "store index rebuilt|checkpoint loaded|node ready" "$dir/node.log" | tail -3

echo "--- restart after SIGKILL, 20 s of load since the start"
"$bin" bench ingest --target "$http" --devices "$devices" --duration 20s --rate 20000 --batch 1000 --quiet | grep throughput
kill -KILL "$node"; wait "$node" 2>/dev/null || true
grep "checkpoint written" "$dir/node.log" | tail -1
t=$(date +%s.%N); start_node "$dir/a"; echo "ready and caught up after $(ready_after "$t")"
grep -E "store index rebuilt|checkpoint loaded|node ready" "$dir/node.log" | tail -3
until status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["sinks"][0]["lag_records"]==0 else 1)'; do sleep 0.2; done
sleep 1
kill -TERM "$node"; wait "$node" || true

echo "--- recover from the cloud"
rm -rf "$dir/a"
/usr/bin/time -v -o "$dir/time" "$bin" recover --from-cloud --node-id bench-site \
	--cloud-url "nats://127.0.0.1:$cloud_port" --data-dir "$dir/b" 2>/dev/null
grep -E "Maximum resident" "$dir/time" | sed 's/^\t//'
