#!/usr/bin/env bash
# Try a two-proxy Weft mesh on loopback, no root and no iptables needed:
#
#   curl -> weft-proxy "client" (outbound, explicit mode)
#        -> mutual TLS 1.3, SPIFFE identities from weft-control-plane
#        -> weft-proxy "app" (inbound, strict mTLS) -> a small HTTP server
#
# It makes a trust anchor and an issuer with weftctl, starts the control plane (local mode: a
# tokens file), the two proxies and the server, sends requests through, shows the identities in
# the metrics and that the app's proxy refuses plaintext, then keeps running so you can send your
# own (Ctrl-C stops everything). With --once it stops after the checks, failing loudly if any did
# not hold (CI runs it that way). Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
[ "${1:-}" = "--once" ] && once=true

pids=()
work=$(mktemp -d)
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

fail() {
  echo "demo: $*" >&2
  for f in "$work"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (up to 10 s) until GET $1 answers 200.
wait_ok() {
  for _ in $(seq 1 200); do
    curl -fsS --max-time 1 -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

echo "== building weft-proxy, weft-control-plane and weftctl (release; with weft-bench, one build for all make targets)"
# The same package set as the Makefile's other release builds, so they share one build.
# shellcheck disable=SC2086
cargo build --release -q ${RELEASE_PACKAGES:--p weft-proxy -p weft-control-plane -p weftctl -p weft-bench}
bin=./target/release

echo "== a trust anchor and an issuer (weftctl certs)"
$bin/weftctl certs create-anchor --out "$work/pki" >/dev/null
$bin/weftctl certs create-issuer --anchor-cert "$work/pki/anchor.crt" \
  --anchor-key "$work/pki/anchor.key" --out "$work/pki/issuer" >/dev/null
$bin/weftctl certs inspect "$work/pki/issuer/issuer.crt" | sed 's/^/   /'

# Local mode: each proxy proves its workload with a token from this file.
client_token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
app_token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s demo client\n%s demo app\n' "$client_token" "$app_token" >"$work/tokens"
echo "$client_token" >"$work/client.token"
echo "$app_token" >"$work/app.token"

# The app: a server on a free port that answers every GET with a short page.
mkdir -p "$work/www" && echo "hello from the app behind weft" >"$work/www/index.html"
app_port=$(free_port)
python3 -m http.server "$app_port" --bind 127.0.0.1 --directory "$work/www" >"$work/app.log" 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$app_port/" || fail "the demo app did not start"
echo "== app on 127.0.0.1:$app_port"

cp_port=$(free_port)
cp_admin=$(free_port)
$bin/weft-control-plane --issuer "$work/pki/issuer" --tokens "$work/tokens" \
  --grpc-addr "127.0.0.1:$cp_port" --admin-addr "127.0.0.1:$cp_admin" >"$work/control-plane.log" 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$cp_admin/ready" || fail "the control plane did not start"
echo "== weft-control-plane: gRPC (identity) on 127.0.0.1:$cp_port, admin on :$cp_admin"

identity_env=(WEFT_CONTROL_PLANE="127.0.0.1:$cp_port" WEFT_TRUST_ANCHORS="$work/pki/issuer/anchors.pem"
  WEFT_NAMESPACE=demo WEFT_LOG_FORMAT=json)

# The app's proxy: inbound only matters; strict mTLS.
app_in=$(free_port)
app_admin=$(free_port)
env "${identity_env[@]}" WEFT_SERVICE_ACCOUNT=app WEFT_IDENTITY_TOKEN_FILE="$work/app.token" \
  WEFT_INBOUND_PORT="$app_in" WEFT_INBOUND_TARGET="127.0.0.1:$app_port" WEFT_INBOUND_MTLS=strict \
  WEFT_OUTBOUND_PORT=0 WEFT_ADMIN_PORT="$app_admin" \
  $bin/weft-proxy >"$work/proxy-app.log" 2>&1 &
pids+=($!)

# The client's proxy: the app's address is meshed, reached through the app's proxy.
client_out=${WEFT_OUTBOUND_PORT:-15140}
client_admin=${WEFT_ADMIN_PORT:-15190}
if $once; then client_out=$(free_port); client_admin=$(free_port); fi
env "${identity_env[@]}" WEFT_SERVICE_ACCOUNT=client WEFT_IDENTITY_TOKEN_FILE="$work/client.token" \
  WEFT_OUTBOUND_PORT="$client_out" WEFT_OUTBOUND_TARGET="127.0.0.1:$app_port" \
  WEFT_MESH_DESTINATIONS="127.0.0.1:$app_port=spiffe://cluster.local/ns/demo/sa/app@127.0.0.1:$app_in" \
  WEFT_INBOUND_PORT=0 WEFT_ADMIN_PORT="$client_admin" \
  $bin/weft-proxy >"$work/proxy-client.log" 2>&1 &
pids+=($!)

# Ready means holding a certificate from the control plane.
wait_ok "http://127.0.0.1:$app_admin/ready" || fail "the app's proxy did not become ready"
wait_ok "http://127.0.0.1:$client_admin/ready" || fail "the client's proxy did not become ready"
echo "== weft-proxy spiffe://cluster.local/ns/demo/sa/client: outbound 127.0.0.1:$client_out, admin :$client_admin"
echo "== weft-proxy spiffe://cluster.local/ns/demo/sa/app:    inbound  127.0.0.1:$app_in (strict mTLS), admin :$app_admin"

for i in 1 2 3; do
  body=$(curl -sS --max-time 5 "http://127.0.0.1:$client_out/")
  echo "   request $i, curl -> client proxy -> mTLS -> app proxy -> app: $body"
  [ "$body" = "hello from the app behind weft" ] || fail "unexpected answer: $body"
done

echo "== the client proxy's metrics (curl http://127.0.0.1:$client_admin/metrics):"
metrics=$(curl -sS --max-time 5 "http://127.0.0.1:$client_admin/metrics")
echo "$metrics" | grep -E '^weft_(requests_total|tls_handshakes_total\{.*result="ok"|identity_cert_expiry)' | sed 's/^/   /'
echo "$metrics" | grep -q 'weft_requests_total{client_id="spiffe://cluster.local/ns/demo/sa/client",direction="outbound",dst_endpoint="",dst_service="",server_id="spiffe://cluster.local/ns/demo/sa/app",status_code="200",tls="true"} 3' \
  || fail "the client proxy did not count 3 mTLS requests with both identities"

echo "== plaintext straight to the app's proxy is refused (strict mTLS):"
if curl -sS --max-time 5 "http://127.0.0.1:$app_in/" >/dev/null 2>&1; then
  fail "the app's proxy served plaintext in strict mode"
fi
refused=$(curl -sS --max-time 5 "http://127.0.0.1:$app_admin/metrics" | grep '^weft_inbound_connections_refused_total')
echo "   $refused"
echo "$refused" | grep -q 'plaintext_in_strict_mode"} 1' || fail "the refusal was not counted"

if $once; then
  echo "== ok"
  exit 0
fi
echo
echo "Try it yourself:  curl -v http://127.0.0.1:$client_out/"
echo "Metrics:          curl http://127.0.0.1:$client_admin/metrics   (client's proxy)"
echo "                  curl http://127.0.0.1:$app_admin/metrics   (app's proxy)"
echo "                  curl http://127.0.0.1:$cp_admin/metrics   (control plane)"
echo "Ctrl-C stops everything."
wait "${pids[3]}"
