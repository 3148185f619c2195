#!/usr/bin/env bash
# Measures the node's resident memory with N idle MQTT device connections
# (docs/BENCHMARKS.md, "Idle connections: what RSS is made of"): the node's
# RSS, split into anonymous memory (heap, stacks) and file-backed pages (the
# holdfast executable's own code and read-only data, mapped from the page
# cache), before and after N MQTT 3.1.1 clients connect and stay idle; then
# how much of the executable's resident pages the idle node touches in 10 s.
# The binary is built as shipped and evicted from the page cache before it
# starts, so its pages are read from disk as an installed node's are (see
# the comments below for the variables that change either).
#
# Usage: scripts/idle-conns-rss.sh [connections]   (default 1000)
# Everything runs on 127.0.0.1 in a temporary directory, removed at the end.
set -euo pipefail
conns=${1:-1000}
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
bin=$dir/holdfast
# Built as deploy/Dockerfile builds the shipped binary (static, stripped);
# HOLDFAST_RSS_DEV_BUILD=1 builds with plain `go build` (cgo where a C
# compiler is found: a dynamic executable that also maps libc).
if [ -n "${HOLDFAST_RSS_DEV_BUILD:-}" ]; then
	go build -o "$bin" ./cmd/holdfast
else
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin" ./cmd/holdfast
fi
# Start from the executable on disk, not from the page cache the build left:
# the build leaves it cached in folios of up to 2 MiB (we think because the
# linker writes it through a shared mapping; not verified), and the kernel
# maps a whole folio into a process at its first touch: 15 MB more
# file-backed RSS than the same file read from disk, as a node reads its
# installed binary after a boot. HOLDFAST_RSS_WARM=1 keeps the build's page
# cache.
if [ -z "${HOLDFAST_RSS_WARM:-}" ]; then
	python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$bin"
fi
http=127.0.0.1:18199 mqtt=127.0.0.1:18198
"$bin" run --data-dir "$dir/data" --node-id idle --http-addr "$http" --mqtt-addr "$mqtt" >"$dir/node.log" 2>&1 &
node=$!
trap 'kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
until curl -sf "http://$http/healthz" >/dev/null; do sleep 0.2; done
sleep 2
rss() { grep -E '^(VmRSS|RssAnon|RssFile):' "/proc/$node/status" | tr -s ' ' | tr '\n' ' '; echo; }
echo "idle node:          $(rss)"
python3 - "$conns" "${mqtt##*:}" <<'PY' &
import socket, struct, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(n):
    cid = b"idle-%d" % i
    rem = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"\x10" + bytes([len(rem)]) + rem)
    assert s.recv(4)[:1] == b"\x20", "no CONNACK"
    socks.append(s)
print("connected", len(socks), flush=True)
time.sleep(25)
PY
clients=$!
sleep 8
echo "$conns idle conns: $(rss)"
# The executable's pages the idle node still touches: clear the pages'
# referenced bits, idle 10 s, and add up what was referenced again in its
# mappings (the rest of its file-backed RSS is mapped, not used).
echo 1 >"/proc/$node/clear_refs"
sleep 10
exe_kb() { awk -v f="$1" -v bin="$bin" '$NF == bin {p = 1; next} /^[0-9a-f]+-[0-9a-f]+ / {p = 0} p && $1 == f {kb += $2} END {print kb}' "/proc/$node/smaps"; }
echo "executable pages: $(exe_kb Rss:) kB resident, $(exe_kb Referenced:) kB referenced in 10 s of idling"
wait $clients
