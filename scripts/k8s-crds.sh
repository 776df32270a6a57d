#!/usr/bin/env bash
# scripts/k8s-crds.sh OUTDIR: gather every CRD the k8s tier's cluster applies into OUTDIR.
#
#   OUTDIR/gateway-api/  Gateway API's standard channel (config/crd/standard/*.yaml of the
#                        sigs.k8s.io/gateway-api Go module at the release pinned below, checked
#                        against its pinned go.sum hash): the CRDs and the safe-upgrades
#                        ValidatingAdmissionPolicy the release's standard install carries
#   OUTDIR/smi/          SMI TrafficSplit v1alpha4 + v1alpha2 (k8s-lab/crds/smi-split.yaml: no
#                        published module carries a CRD serving both; its header says why)
#   OUTDIR/weft/         Weft's own weft.dev/v1alpha1 CRDs (helm/weft/crds/*.yaml)
#
# The module comes from the Go module proxy through `go mod download` (verified against the
# checksum database like any module) into Go's module cache, so a second run copies files and
# takes well under a second. Idempotent: each folder is replaced whole. Prints OUTDIR as its
# last line. OUTDIR/VERSIONS names the Gateway API module, version and hash.
set -euo pipefail

# v1.6.3: the newest Gateway API release whose module builds with Go 1.26, with TLSRoute,
# ListenerSet, TCPRoute and UDPRoute in the standard channel; its CRDs need Kubernetes 1.31 or
# newer (TLSRoute's CEL), and scripts/check-crds.sh proves them on our pinned v1.34.
GATEWAY_API_MODULE=sigs.k8s.io/gateway-api
GATEWAY_API_VERSION=v1.6.3
GATEWAY_API_SUM=h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc=

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: scripts/k8s-crds.sh OUTDIR" >&2
  exit 64
fi
out=$1
root=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v go >/dev/null; then
  echo "k8s-crds: no 'go' on PATH; the Gateway API CRDs come from the $GATEWAY_API_MODULE Go module" >&2
  exit 1
fi

# Outside any Go module or workspace: the download is of that one module, nothing of ours.
json=$(cd / && GOWORK=off GOFLAGS='' go mod download -json "$GATEWAY_API_MODULE@$GATEWAY_API_VERSION") || {
  echo "k8s-crds: go mod download $GATEWAY_API_MODULE@$GATEWAY_API_VERSION failed:" >&2
  echo "$json" >&2
  exit 1
}
field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" <<<"$json"; }
dir=$(field Dir)
sum=$(field Sum)
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "k8s-crds: go mod download named no module folder for $GATEWAY_API_MODULE@$GATEWAY_API_VERSION:" >&2
  echo "$json" >&2
  exit 1
fi
if [ "$sum" != "$GATEWAY_API_SUM" ]; then
  echo "k8s-crds: $GATEWAY_API_MODULE@$GATEWAY_API_VERSION has hash $sum, pinned $GATEWAY_API_SUM" >&2
  exit 1
fi
src=$dir/config/crd/standard
shopt -s nullglob
gateway=("$src"/*.yaml)
weft=("$root"/helm/weft/crds/*.yaml)
shopt -u nullglob
if [ ${#gateway[@]} -eq 0 ]; then
  echo "k8s-crds: no standard-channel CRDs in $src" >&2
  exit 1
fi
if [ ${#weft[@]} -eq 0 ]; then
  echo "k8s-crds: no Weft CRDs in $root/helm/weft/crds" >&2
  exit 1
fi

# Each folder is filled beside its final place and then swapped in, so a failed run leaves the
# previous set whole and a second run leaves no file of an older release behind.
mkdir -p "$out"
replace() { # replace NAME FILE...
  local name=$1 new="$out/.$1.new"
  shift
  rm -rf "$new"
  mkdir -p "$new"
  cp "$@" "$new/"
  chmod 0644 "$new"/*
  rm -rf "${out:?}/$name"
  mv "$new" "$out/$name"
}
replace gateway-api "${gateway[@]}"
replace smi "$root/k8s-lab/crds/smi-split.yaml"
replace weft "${weft[@]}"
echo "$GATEWAY_API_MODULE $GATEWAY_API_VERSION $GATEWAY_API_SUM" > "$out/VERSIONS"

echo "k8s-crds: Gateway API $GATEWAY_API_VERSION standard channel (${#gateway[@]} files), SMI TrafficSplit, Weft (${#weft[@]} files) in $out" >&2
echo "$out"
