#!/usr/bin/env bash
# Builds Helm, pinned in tools/helm/go.mod, from its published Go module into a cache outside
# the source tree, named by a hash of the inputs: a second run only checks a stamp. Prints the
# binary's path as its last line; with --locate it only prints it (exit 3 when these sources
# have not been built). WEFT_TOOLS_CACHE moves the cache (default ~/.cache/weft).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null; then
  echo "helm-build: no 'go' on PATH; Helm is built from its Go module (Go 1.26 or newer)" >&2
  exit 1
fi
cache=${WEFT_TOOLS_CACHE:-$HOME/.cache/weft}/helm
key=$( (sha256sum tools/helm/go.mod tools/helm/go.sum scripts/helm-build.sh; go env GOVERSION) | sha256sum | cut -c1-16)
out=$cache/$key
if [ "${1:-}" = --locate ]; then
  if [ -f "$out/stamp" ]; then echo "$out/helm"; exit 0; fi
  echo "no Helm built from tools/helm in $out (run scripts/helm-build.sh)" >&2
  exit 3
fi
if [ -f "$out/stamp" ]; then
  echo "$out/helm"
  exit 0
fi

version=$(sed -n 's/^\thelm.sh\/helm\/v4 \(v[0-9.]*\).*/\1/p' tools/helm/go.mod)
[ -n "$version" ] || { echo "helm-build: no helm.sh/helm/v4 version in tools/helm/go.mod" >&2; exit 1; }
rm -rf "$out.partial"
mkdir -p "$out.partial"
start=$(date +%s)
echo "helm-build: building Helm $version (tools/helm) into $out" >&2
(cd tools/helm && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.metadata=weft" \
  -o "$out.partial/helm" helm.sh/helm/v4/cmd/helm)
echo "built in $(( $(date +%s) - start ))s by $(go env GOVERSION)" > "$out.partial/stamp"
rm -rf "$out"
mv "$out.partial" "$out"
echo "$out/helm"
