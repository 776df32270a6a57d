#!/usr/bin/env bash
# Builds Jaeger (the v2 `jaeger` binary: an OpenTelemetry-collector-based all-in-one that takes
# OTLP and serves the query API), pinned in tools/jaeger/go.mod, from its published Go module
# into a cache outside the source tree, named by a hash of the inputs: a second run only checks
# a stamp. Prints the binary's path as its last line; with --locate it only prints it (exit 3
# when these sources have not been built). WEFT_TOOLS_CACHE moves the cache (default
# ~/.cache/weft). The module ships no UI assets, so the binary serves a placeholder page at /
# and the full query API under /api.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null; then
  echo "jaeger-build: no 'go' on PATH; Jaeger is built from its Go module (Go 1.26 or newer)" >&2
  exit 1
fi
cache=${WEFT_TOOLS_CACHE:-$HOME/.cache/weft}/jaeger
key=$( (sha256sum tools/jaeger/go.mod tools/jaeger/go.sum scripts/jaeger-build.sh; go env GOVERSION) | sha256sum | cut -c1-16)
out=$cache/$key
if [ "${1:-}" = --locate ]; then
  if [ -f "$out/stamp" ]; then echo "$out/jaeger"; exit 0; fi
  echo "no Jaeger built from tools/jaeger in $out (run scripts/jaeger-build.sh)" >&2
  exit 3
fi
if [ -f "$out/stamp" ]; then
  echo "$out/jaeger"
  exit 0
fi

version=$(sed -n 's/^\tgithub.com\/jaegertracing\/jaeger \(v[0-9.]*\).*/\1/p' tools/jaeger/go.mod)
[ -n "$version" ] || { echo "jaeger-build: no github.com/jaegertracing/jaeger version in tools/jaeger/go.mod" >&2; exit 1; }
rm -rf "$out.partial"
mkdir -p "$out.partial"
start=$(date +%s)
echo "jaeger-build: building Jaeger $version (tools/jaeger) into $out" >&2
(cd tools/jaeger && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
  -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$version -X github.com/jaegertracing/jaeger/internal/version.commitSHA=weft" \
  -o "$out.partial/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
echo "built in $(( $(date +%s) - start ))s by $(go env GOVERSION)" > "$out.partial/stamp"
rm -rf "$out"
mv "$out.partial" "$out"
echo "$out/jaeger"
