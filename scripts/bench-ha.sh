#!/usr/bin/env bash
# bench-ha.sh: what an HA pair costs on the ack path. In one run it loads,
# with the same `holdfast bench ingest --target ... --json` settings,
#   single  one node, no HA
#   sync    a pair (two nodes + a witness) with --ha-replication sync
#   async   a pair with --ha-replication async
# all on 127.0.0.1 with free ports and temporary data directories, and prints
# a markdown table: acked events/s, ack latency p50/p99, the ratio to the
# single node of the same round, and for a pair the standby's replication lag
# (ha.lag_records on the primary) when the load stopped and 1 s later.
#
#   bash scripts/bench-ha.sh                 # 2 rounds, 15 s per load
#   ROUNDS=1 DURATION=5s bash scripts/bench-ha.sh
#
# Environment: ROUNDS (2; even rounds run the setups in reverse order, to
# see the drift), DURATION (15s), BATCHES ("10 500": one load per batch
# size, events per HTTP request), DEVICES (100), CONNECTIONS (8),
# KEEP=1 keeps the work directory (logs, JSON reports).
set -euo pipefail

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-15s}
BATCHES=${BATCHES:-"10 500"}
DEVICES=${DEVICES:-100}
CONNECTIONS=${CONNECTIONS:-8}

cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
for tool in jq python3 curl; do
	command -v "$tool" >/dev/null || { echo "bench-ha: needs $tool" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-bench-ha.XXXXXX")
BIN=$WORK/holdfast
PIDS=()

stop_all() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}

cleanup() {
	local rc=$?
	stop_all
	if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then
		echo "bench-ha: work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench-ha: $*" >&2; }

# ports N: N free TCP ports on 127.0.0.1, one a line.
ports() {
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

status() { curl -fsS --max-time 2 "http://$1/v1/status" 2>/dev/null; }

# wait_healthy HTTP PID LOG: until the node answers /healthz.
wait_healthy() {
	local deadline=$((SECONDS + 60))
	while ((SECONDS < deadline)); do
		kill -0 "$2" 2>/dev/null || { log "node $1 exited:"; tail -20 "$3" >&2; return 1; }
		curl -fsS --max-time 2 "http://$1/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	log "node $1 not answering after 60 s"; tail -20 "$3" >&2
	return 1
}

# wait_paired HTTP_A HTTP_B: prints the primary's HTTP address once it is
# primary with its standby paired (and the other node its standby).
wait_paired() {
	local deadline=$((SECONDS + 90)) a b s o
	while ((SECONDS < deadline)); do
		for a in "$1" "$2"; do
			b=$2; [[ $a == "$2" ]] && b=$1
			s=$(status "$a") || continue
			if [[ $(jq -r '.ha.role' <<<"$s") == primary && $(jq -r '.ha.standby_state' <<<"$s") == paired ]]; then
				o=$(status "$b") || continue
				if [[ $(jq -r '.ha.role' <<<"$o") == standby ]]; then
					echo "$a"
					return 0
				fi
			fi
		done
		sleep 0.2
	done
	log "no paired primary after 90 s: $(status "$1" | jq -c .ha) / $(status "$2" | jq -c .ha)"
	return 1
}

# start SETUP DIR: starts the setup's processes; sets TARGET (the HTTP
# address to load) and PAIRED_AFTER (seconds from the start to paired).
start() {
	local setup=$1 dir=$2 p
	mkdir -p "$dir"
	if [[ $setup == single ]]; then
		mapfile -t p < <(ports 2)
		"$BIN" run --data-dir "$dir/n" --node-id bench-ha --http-addr "127.0.0.1:${p[0]}" --mqtt-addr "127.0.0.1:${p[1]}" \
			>"$dir/n.log" 2>&1 &
		PIDS+=($!)
		TARGET=127.0.0.1:${p[0]}
		wait_healthy "$TARGET" "$!" "$dir/n.log"
		PAIRED_AFTER=-
		return
	fi
	# Ports: a http, a mqtt, a link, b http, b mqtt, b link, witness link.
	mapfile -t p < <(ports 7)
	local la=127.0.0.1:${p[2]} lb=127.0.0.1:${p[5]} lw=127.0.0.1:${p[6]} t0=$SECONDS
	"$BIN" witness --ha-listen "$lw" --ha-peers "$la,$lb" --data-dir "$dir/w" >"$dir/w.log" 2>&1 &
	PIDS+=($!)
	"$BIN" run --data-dir "$dir/a" --node-id bench-ha --http-addr "127.0.0.1:${p[0]}" --mqtt-addr "127.0.0.1:${p[1]}" \
		--ha-listen "$la" --ha-peers "$lb,$lw" --ha-replication "$setup" >"$dir/a.log" 2>&1 &
	PIDS+=($!)
	local pa=$!
	"$BIN" run --data-dir "$dir/b" --node-id bench-ha --http-addr "127.0.0.1:${p[3]}" --mqtt-addr "127.0.0.1:${p[4]}" \
		--ha-listen "$lb" --ha-peers "$la,$lw" --ha-replication "$setup" >"$dir/b.log" 2>&1 &
	PIDS+=($!)
	local pb=$!
	wait_healthy "127.0.0.1:${p[0]}" "$pa" "$dir/a.log"
	wait_healthy "127.0.0.1:${p[3]}" "$pb" "$dir/b.log"
	TARGET=$(wait_paired "127.0.0.1:${p[0]}" "127.0.0.1:${p[3]}")
	PAIRED_AFTER=$((SECONDS - t0))
	local mode
	mode=$(status "$TARGET" | jq -r '.ha.replication')
	[[ $mode == "$setup" ]] || { log "primary reports replication $mode, want $setup"; return 1; }
}

log "build"
CGO_ENABLED=0 go build -o "$BIN" ./cmd/holdfast

RESULTS=$WORK/results.tsv
: >"$RESULTS"
SETUPS=(single sync async)
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for round in $(seq "$ROUNDS"); do
	order=("${SETUPS[@]}")
	if ((round % 2 == 0)); then order=(async sync single); fi
	for setup in "${order[@]}"; do
		dir=$WORK/r$round-$setup
		log "round $round: $setup: start"
		start "$setup" "$dir"
		log "round $round: $setup: ready at $TARGET (paired after ${PAIRED_AFTER} s)"
		for batch in $BATCHES; do
			out=$dir/bench-b$batch.json
			"$BIN" bench ingest --target "$TARGET" --transport http --devices "$DEVICES" --connections "$CONNECTIONS" \
				--batch "$batch" --duration "$DURATION" --json --quiet --allow-errors >"$out" 2>"$dir/bench-b$batch.err" ||
				{ log "bench failed:"; cat "$dir/bench-b$batch.err" >&2; exit 1; }
			lag0=- lag1=- state=-
			if [[ $setup != single ]]; then
				s=$(status "$TARGET")
				lag0=$(jq -r '.ha.lag_records' <<<"$s")
				state=$(jq -r '"\(.ha.role)/\(.ha.standby_state)"' <<<"$s")
				sleep 1
				lag1=$(status "$TARGET" | jq -r '.ha.lag_records')
			fi
			jq -r --arg r "$round" --arg s "$setup" --arg l0 "$lag0" --arg l1 "$lag1" --arg st "$state" --arg pa "$PAIRED_AFTER" \
				'[$r, $s, .batch, .throughput_eps, .ack_latency.p50_ms, .ack_latency.p99_ms, .events_acked,
				  ([.errors[]] | add // 0), .cpu.node_cores, $l0, $l1, $st, $pa] | @tsv' "$out" >>"$RESULTS"
			log "round $round: $setup: batch $batch: $(tail -1 "$RESULTS")"
		done
		stop_all
	done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"

# The table: ratios against the single node of the same round and batch.
echo
echo "load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER; $(nproc) CPUs; duration $DURATION per load, $DEVICES devices, $CONNECTIONS connections"
echo
echo "| round | setup | batch | acked events/s | vs single | ack p50 ms | ack p99 ms | p99 vs single | node cores | errors | lag at stop / 1 s later | paired after |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '
	{ row[NR] = $0; if ($2 == "single") { eps[$1 "/" $3] = $4; p99[$1 "/" $3] = $6 } }
	END {
		for (i = 1; i <= NR; i++) {
			split(row[i], f, "\t")
			k = f[1] "/" f[3]
			r = (f[2] != "single" && eps[k] > 0) ? sprintf("%.2f", f[4] / eps[k]) : "1"
			q = (f[2] != "single" && p99[k] > 0) ? sprintf("%.2f", f[6] / p99[k]) : "1"
			lag = (f[2] == "single") ? "–" : f[10] " / " f[11]
			pa = (f[2] == "single") ? "–" : f[13] " s"
			printf "| %s | %s | %s | %d | %s | %.2f | %.2f | %s | %.2f | %s | %s | %s |\n", f[1], f[2], f[3], f[4], r, f[5], f[6], q, f[9], f[8], lag, pa
		}
	}' "$RESULTS"
echo
echo "Means over the rounds:"
echo
echo "| setup | batch | acked events/s | vs single | ack p50 ms | ack p99 ms |"
echo "|---|---|---|---|---|---|"
awk -F'\t' '
	{ k = $2 "\t" $3; n[k]++; e[k] += $4; a[k] += $5; b[k] += $6; if (!(k in seen)) { seen[k] = 1; keys[++m] = k } }
	END {
		for (i = 1; i <= m; i++) {
			k = keys[i]; split(k, f, "\t")
			s = "single\t" f[2]
			r = (f[1] != "single" && e[s] > 0) ? sprintf("%.2f", (e[k] / n[k]) / (e[s] / n[s])) : "1"
			printf "| %s | %s | %d | %s | %.2f | %.2f |\n", f[1], f[2], e[k] / n[k], r, a[k] / n[k], b[k] / n[k]
		}
	}' "$RESULTS"
