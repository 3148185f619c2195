#!/usr/bin/env bash
# deploy/quickstart.sh: a node, a cloud and device load together, from a fresh
# clone with Go installed (README, "Quickstart in five minutes"):
#
#   deploy/quickstart.sh
#
# It builds holdfast, starts `holdfast cloud` and `holdfast run --cloud-url`
# in a temporary directory, plays load with `holdfast bench ingest`, shows the
# node's status, and stops everything at the end, or on Ctrl-C. Run from a
# terminal, it waits for Ctrl-C after the load so that you can look at the
# status page and /metrics.
#
# Environment (all optional):
#   HOLDFAST_QUICKSTART_DURATION    how long the load runs (default 10s)
#   HOLDFAST_QUICKSTART_HTTP_PORT   the node's HTTP port (default 8080)
#   HOLDFAST_QUICKSTART_MQTT_PORT   the node's MQTT port (default 1883)
#   HOLDFAST_QUICKSTART_CLOUD_PORT  the cloud's NATS port (default 4222)
#   HOLDFAST_QUICKSTART_WAIT        1: wait for Ctrl-C after the load, 0: stop
#                                   (default: 1 on a terminal, else 0)
set -euo pipefail

duration=${HOLDFAST_QUICKSTART_DURATION:-10s}
http_port=${HOLDFAST_QUICKSTART_HTTP_PORT:-8080}
mqtt_port=${HOLDFAST_QUICKSTART_MQTT_PORT:-1883}
cloud_port=${HOLDFAST_QUICKSTART_CLOUD_PORT:-4222}
if [[ -t 0 && -t 1 ]]; then wait_default=1; else wait_default=0; fi
wait_at_end=${HOLDFAST_QUICKSTART_WAIT:-$wait_default}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-quickstart.XXXXXX")
pids=()

stop() {
	local status=$?
	trap - EXIT INT TERM
	if ((${#pids[@]})); then
		echo "==> stopping the node and the cloud"
		# The node first, so that it closes its link to the cloud cleanly.
		for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
			kill -TERM "${pids[i]}" 2>/dev/null || true
			wait "${pids[i]}" 2>/dev/null || true
		done
	fi
	rm -rf "$work"
	exit "$status"
}
trap stop EXIT
trap 'exit 130' INT TERM

# port_open says whether something listens on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port waits up to 30 s for 127.0.0.1:$1, else shows the log $2 and fails.
wait_port() {
	for _ in $(seq 300); do
		if port_open "$1"; then return 0; fi
		sleep 0.1
	done
	echo "quickstart: nothing listens on 127.0.0.1:$1 after 30 s; its log:" >&2
	cat "$2" >&2
	return 1
}

for port in "$http_port" "$mqtt_port" "$cloud_port"; do
	if port_open "$port"; then
		echo "quickstart: 127.0.0.1:$port is taken; free it or choose other ports with HOLDFAST_QUICKSTART_*_PORT (see the script's head)" >&2
		exit 1
	fi
done

command -v go >/dev/null || { echo "quickstart: go not found: install Go 1.26 (or add /usr/local/go/bin to PATH)" >&2; exit 1; }

echo "==> building holdfast (in $work)"
(cd "$repo" && go build -o "$work/holdfast" ./cmd/holdfast)
bin=$work/holdfast

echo "==> starting the cloud: holdfast cloud --listen 127.0.0.1:$cloud_port"
"$bin" cloud --data-dir "$work/cloud" --listen "127.0.0.1:$cloud_port" >"$work/cloud.log" 2>&1 &
pids+=($!)
wait_port "$cloud_port" "$work/cloud.log"

echo "==> starting the node: holdfast run --cloud-url nats://127.0.0.1:$cloud_port"
"$bin" run --node-id quickstart --data-dir "$work/node" \
	--http-addr "127.0.0.1:$http_port" --mqtt-addr "127.0.0.1:$mqtt_port" \
	--cloud-url "nats://127.0.0.1:$cloud_port" >"$work/node.log" 2>&1 &
pids+=($!)
wait_port "$http_port" "$work/node.log"

cat <<EOF

  status page  http://127.0.0.1:$http_port/
  metrics      http://127.0.0.1:$http_port/metrics
  status JSON  http://127.0.0.1:$http_port/v1/status
  MQTT         127.0.0.1:$mqtt_port (topic devices/{device_id}/{stream})
  cloud        nats://127.0.0.1:$cloud_port (holdfast cloud, embedded JetStream)
  logs         $work/node.log, $work/cloud.log

EOF

echo "==> load for $duration: holdfast bench ingest --target 127.0.0.1:$http_port"
"$bin" bench ingest --target "127.0.0.1:$http_port" --duration "$duration" --quiet

# Let the node sync what it took, then show its state.
sleep 1
echo
echo "==> holdfast status --addr 127.0.0.1:$http_port"
"$bin" status --addr "127.0.0.1:$http_port" || true

if [[ $wait_at_end == 1 ]]; then
	echo
	echo "==> the node and the cloud keep running: open the status page above; Ctrl-C stops everything"
	wait "${pids[@]}" || true
fi
