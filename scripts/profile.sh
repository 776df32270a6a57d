#!/usr/bin/env bash
# Where weft-proxy's instructions go, per request: callgrind counts instructions (repeatable,
# unlike time on a shared machine) while oha sends a fixed number of requests through one proxy
# in explicit mode to the bench upstream. Prints instructions per request and the top functions.
#
# With a third argument the request crosses the mesh hop: two proxies with certificates from a
# control plane (mTLS, HTTP/2 between them), and callgrind watches the client's proxy
# (`mesh-outbound`) or the server's (`mesh-inbound`).
#
# Usage: scripts/profile.sh [http1|http2] [REQUESTS] [plain|mesh-outbound|mesh-inbound]
set -euo pipefail
cd "$(dirname "$0")/.."
proto=${1:-http1}
n=${2:-20000}
hop=${3:-plain}
case "$hop" in plain | mesh-outbound | mesh-inbound) ;; *) echo "profile: unknown hop $hop" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || { echo "profile: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
scripts/bench-deps.sh
oha="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
# shellcheck disable=SC2086
cargo build --release --locked -q ${RELEASE_PACKAGES:--p weft-proxy -p weft-control-plane -p weftctl -p weft-bench}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port); out=$(free_port); admin=$(free_port)
./target/release/weft-bench server --http "127.0.0.1:$up" --tcp "127.0.0.1:$(free_port)" >/dev/null &
pids+=($!)
callgrind=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" -q)
if [ "$hop" = plain ]; then
  WEFT_OUTBOUND_PORT=$out WEFT_INBOUND_PORT=0 WEFT_ADMIN_PORT=$admin WEFT_LOG=warn \
    WEFT_OUTBOUND_TARGET="127.0.0.1:$up" \
    "${callgrind[@]}" ./target/release/weft-proxy &
  pids+=($!)
  profiled=${pids[-1]}
else
  bin=./target/release
  $bin/weftctl certs create-anchor --out "$work/pki" >/dev/null
  $bin/weftctl certs create-issuer --anchor-cert "$work/pki/anchor.crt" \
    --anchor-key "$work/pki/anchor.key" --out "$work/pki/issuer" >/dev/null
  printf 'profile-client-token-0001 profile client\nprofile-server-token-0001 profile server\n' >"$work/tokens"
  echo profile-client-token-0001 >"$work/client.token"
  echo profile-server-token-0001 >"$work/server.token"
  cp_port=$(free_port); cp_admin=$(free_port); in_port=$(free_port); other_admin=$(free_port)
  $bin/weft-control-plane --issuer "$work/pki/issuer" --tokens "$work/tokens" --log warn \
    --grpc-addr "127.0.0.1:$cp_port" --admin-addr "127.0.0.1:$cp_admin" &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$cp_admin/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  ident=(WEFT_CONTROL_PLANE="127.0.0.1:$cp_port" WEFT_TRUST_ANCHORS="$work/pki/issuer/anchors.pem"
    WEFT_NAMESPACE=profile WEFT_LOG=warn)
  server=(env "${ident[@]}" WEFT_SERVICE_ACCOUNT=server WEFT_IDENTITY_TOKEN_FILE="$work/server.token"
    WEFT_INBOUND_PORT="$in_port" WEFT_INBOUND_TARGET="127.0.0.1:$up" WEFT_OUTBOUND_PORT=0)
  client=(env "${ident[@]}" WEFT_SERVICE_ACCOUNT=client WEFT_IDENTITY_TOKEN_FILE="$work/client.token"
    WEFT_OUTBOUND_PORT="$out" WEFT_OUTBOUND_TARGET="127.0.0.1:$up" WEFT_INBOUND_PORT=0
    WEFT_MESH_DESTINATIONS="127.0.0.1:$up=spiffe://cluster.local/ns/profile/sa/server@127.0.0.1:$in_port")
  if [ "$hop" = mesh-inbound ]; then
    "${server[@]}" WEFT_ADMIN_PORT="$admin" "${callgrind[@]}" $bin/weft-proxy &
    pids+=($!); profiled=${pids[-1]}
    "${client[@]}" WEFT_ADMIN_PORT="$other_admin" $bin/weft-proxy &
    pids+=($!)
  else
    "${server[@]}" WEFT_ADMIN_PORT="$other_admin" $bin/weft-proxy &
    pids+=($!)
    "${client[@]}" WEFT_ADMIN_PORT="$admin" "${callgrind[@]}" $bin/weft-proxy &
    pids+=($!); profiled=${pids[-1]}
  fi
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$other_admin/ready" >/dev/null 2>&1 && break; sleep 0.1; done
fi
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
flags=()
[ "$proto" = http2 ] && flags=(--http2 -p 1)
"$oha" --no-tui -n 200 -c 4 "${flags[@]}" "http://127.0.0.1:$out/" >/dev/null  # warm-up
# Only the measured requests are counted: zero the counters, measure, dump.
callgrind_control -z >/dev/null
"$oha" --no-tui -n "$n" -c 4 "${flags[@]}" "http://127.0.0.1:$out/" >/dev/null
callgrind_control -d >/dev/null
sleep 1
curl -sf -XPOST "http://127.0.0.1:$admin/shutdown" >/dev/null
wait "$profiled" 2>/dev/null || true
dump=$(ls -t "$work"/callgrind.out* | grep -v '\.out$' | head -1 || true)
[ -n "$dump" ] || dump="$work/callgrind.out"
cp "$dump" "${PROFILE_OUT:-/tmp/weft-profile.out}"
total=$(callgrind_annotate "$dump" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | awk '{gsub(",","",$1); print $1}')
echo "profile: $proto over $hop, $n requests: $total instructions, $((total / n)) per request"
callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null | grep -E "^ *[0-9,]+ \(" | head -40
echo "profile: the whole dump is in ${PROFILE_OUT:-/tmp/weft-profile.out} (callgrind_annotate, kcachegrind)"
