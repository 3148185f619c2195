#!/usr/bin/env bash
# Release builds: static holdfast binaries for linux amd64, arm64 and armv7
# (Raspberry Pi OS 32-bit), stamped with the version, commit and build date
# (`holdfast version` prints them), and their SHA-256 sums.
#
#   scripts/release.sh [VERSION]      # default: git describe --tags --always
#
# Writes dist/holdfast-VERSION-linux-{amd64,arm64,armv7} and
# dist/SHA256SUMS; check a download with `sha256sum -c --ignore-missing SHA256SUMS`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

version="${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w -X github.com/holdfast-edge/holdfast/internal/node.Version=${version} -X main.commit=${commit} -X main.buildDate=${date}"

out=dist
rm -rf "$out"
mkdir -p "$out"
build() { # name goos goarch [goarm]
  local name=$1
  echo "--- $name"
  CGO_ENABLED=0 GOOS=$2 GOARCH=$3 GOARM=${4:-} go build -trimpath -ldflags "$ldflags" \
    -o "$out/holdfast-${version}-${name}" ./cmd/holdfast
}
build linux-amd64 linux amd64
build linux-arm64 linux arm64
build linux-armv7 linux arm 7

(cd "$out" && sha256sum holdfast-* > SHA256SUMS && cat SHA256SUMS)
