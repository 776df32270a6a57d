#!/usr/bin/env bash
# make k8s: build the pinned Kubernetes release (tools/k8s/go.mod), etcd, CoreDNS and a pause
# program from their published Go modules into a cache outside the source tree. The output
# directory is named by a hash of the inputs (go.mod, go.sum, our mains, this script), so a second
# run with nothing changed only checks a stamp and prints where the binaries are.
#
# Prints the bin directory as its last line; with --locate it only prints it (exit 3 when these
# sources have not been built). WEFT_K8S_CACHE moves the cache (default
# ~/.cache/weft/k8s). Go's own module and build caches are used as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v go >/dev/null; then
  echo "make k8s: no 'go' on PATH; the k8s tier builds Kubernetes from its Go modules (Go 1.24 or newer)" >&2
  exit 1
fi

cache=${WEFT_K8S_CACHE:-$HOME/.cache/weft/k8s}
key=$( (cd "$root" && find tools/k8s -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print0 \
  | sort -z | xargs -0 sha256sum; sha256sum scripts/k8s-build.sh; go env GOVERSION) | sha256sum | cut -c1-16)
out=$cache/$key
if [ "${1:-}" = --locate ]; then
  # For the harness: where the binaries of these sources are, or why there are none.
  if [ -f "$out/stamp" ]; then echo "$out/bin"; exit 0; fi
  echo "no build of these sources in $out" >&2
  exit 3
fi
if [ -f "$out/stamp" ]; then
  echo "make k8s: up to date ($out/bin)" >&2
  echo "$out/bin"
  exit 0
fi

k8s_version=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' tools/k8s/go.mod)
[ -n "$k8s_version" ] || { echo "make k8s: no k8s.io/kubernetes version in tools/k8s/go.mod" >&2; exit 1; }
major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}

tmp=$out.partial
rm -rf "$tmp"
mkdir -p "$tmp/bin"
start=$(date +%s)

# The version every component reports (and the apiserver's compatibility version derives from):
# without it they would call themselves v0.0.0-master.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done

export CGO_ENABLED=0 GOFLAGS=-mod=readonly
echo "make k8s: building Kubernetes $k8s_version, etcd and pause (tools/k8s) into $tmp/bin" >&2
(cd tools/k8s && go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" tool ./cmd/...)
echo "make k8s: building CoreDNS (tools/k8s/coredns)" >&2
(cd tools/k8s/coredns && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/coredns" .)

took=$(( $(date +%s) - start ))
echo "built in ${took}s by $(go env GOVERSION) for $k8s_version" > "$tmp/stamp"
rm -rf "$out"
mv "$tmp" "$out"
echo "make k8s: done in ${took}s ($out/bin)" >&2
echo "$out/bin"
