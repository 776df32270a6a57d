#!/usr/bin/env bash
# Try a small Weft mesh on loopback, no root and no iptables needed:
#
#   curl -> weft-proxy "client" (outbound, explicit mode, aimed at the Service "app")
#        -> load balanced over the Service's two pods, mutual TLS 1.3 with SPIFFE identities
#        -> weft-proxy of pod app-0 or app-1 (inbound, strict mTLS) -> a small HTTP server
#
# It makes a trust anchor and an issuer with weftctl, writes the cluster as Kubernetes YAML
# (a Service, its EndpointSlice, two Pods) into a folder that the control plane reads (local
# mode), starts the control plane, the proxies and the servers, sends requests through, shows
# them spread over both pods with both identities in the metrics, the client proxy's /config,
# a pod taken out of the YAML, and that a pod's proxy refuses plaintext; then keeps running so
# you can send your own (Ctrl-C stops everything). With --once it stops after the checks,
# failing loudly if any did not hold (CI runs it that way). Everything listens on loopback
# (127.0.0.0/8) only; the Service's cluster IP is a loopback address nothing listens on.
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
cargo build --release -q ${RELEASE_PACKAGES:--p weft-proxy -p weft-control-plane -p weft-cni -p weftctl -p weft-bench}
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

# The app: two pods, each a server on its own loopback address answering with its name.
app_port=$(free_port)
for i in 0 1; do
  mkdir -p "$work/www$i" && echo "hello from app-$i behind weft" >"$work/www$i/index.html"
  python3 -m http.server "$app_port" --bind "127.0.0.2$i" --directory "$work/www$i" >"$work/app-$i.log" 2>&1 &
  pids+=($!)
  wait_ok "http://127.0.0.2$i:$app_port/" || fail "the demo app app-$i did not start"
done
echo "== app pods on 127.0.0.20:$app_port and 127.0.0.21:$app_port"

# The cluster, as Kubernetes YAML: the Service "app" (cluster IP 127.0.10.1), its endpoints,
# and the two meshed pods (each runs weft-proxy, with its inbound port named weft-inbound).
svc_port=$(free_port)
app_in=($(free_port) $(free_port))
mkdir -p "$work/config"
write_config() { # the pod indexes to list as endpoints
  {
    cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: app, namespace: demo}
spec:
  clusterIP: 127.0.10.1
  ports: [{name: http, port: $svc_port, targetPort: http}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: demo, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: $app_port}]
endpoints:
YAML
    for i in "$@"; do
      printf '  - addresses: [127.0.0.2%s]\n    targetRef: {kind: Pod, name: app-%s, namespace: demo}\n' "$i" "$i"
    done
    for i in 0 1; do
      cat <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: app-$i, namespace: demo}
spec:
  serviceAccountName: app
  containers:
  - {name: app, image: demo/app}
  - name: weft-proxy
    image: weft/proxy
    ports: [{name: weft-inbound, containerPort: ${app_in[$i]}}]
status: {podIP: 127.0.0.2$i}
YAML
    done
  } >"$work/config/.cluster.tmp"
  mv "$work/config/.cluster.tmp" "$work/config/cluster.yaml"
}
write_config 0 1

cp_port=$(free_port)
cp_admin=$(free_port)
$bin/weft-control-plane --issuer "$work/pki/issuer" --tokens "$work/tokens" \
  --source "local:$work/config" --config-poll-interval 200ms \
  --grpc-addr "127.0.0.1:$cp_port" --admin-addr "127.0.0.1:$cp_admin" >"$work/control-plane.log" 2>&1 &
pids+=($!)
wait_ok "http://127.0.0.1:$cp_admin/ready" || fail "the control plane did not start"
echo "== weft-control-plane: gRPC (identity, discovery) on 127.0.0.1:$cp_port, admin on :$cp_admin, config from $work/config"

identity_env=(WEFT_CONTROL_PLANE="127.0.0.1:$cp_port" WEFT_TRUST_ANCHORS="$work/pki/issuer/anchors.pem"
  WEFT_NAMESPACE=demo WEFT_LOG_FORMAT=json)

# Each pod's proxy: inbound only matters; strict mTLS.
app_admin=()
for i in 0 1; do
  app_admin+=($(free_port))
  env "${identity_env[@]}" WEFT_SERVICE_ACCOUNT=app WEFT_IDENTITY_TOKEN_FILE="$work/app.token" \
    WEFT_INBOUND_PORT="${app_in[$i]}" WEFT_INBOUND_TARGET="127.0.0.2$i:$app_port" WEFT_INBOUND_MTLS=strict \
    WEFT_OUTBOUND_PORT=0 WEFT_ADMIN_PORT="${app_admin[$i]}" \
    $bin/weft-proxy >"$work/proxy-app-$i.log" 2>&1 &
  pids+=($!)
done

# The client's proxy, aimed at the Service: discovery says where its endpoints are.
client_out=${WEFT_OUTBOUND_PORT:-15140}
client_admin=${WEFT_ADMIN_PORT:-15190}
if $once; then client_out=$(free_port); client_admin=$(free_port); fi
env "${identity_env[@]}" WEFT_SERVICE_ACCOUNT=client WEFT_IDENTITY_TOKEN_FILE="$work/client.token" \
  WEFT_OUTBOUND_PORT="$client_out" WEFT_OUTBOUND_TARGET="127.0.10.1:$svc_port" \
  WEFT_INBOUND_PORT=0 WEFT_ADMIN_PORT="$client_admin" \
  $bin/weft-proxy >"$work/proxy-client.log" 2>&1 &
client_pid=$!
pids+=($client_pid)

# Ready means holding a certificate from the control plane.
for i in 0 1; do
  wait_ok "http://127.0.0.1:${app_admin[$i]}/ready" || fail "the proxy of app-$i did not become ready"
done
wait_ok "http://127.0.0.1:$client_admin/ready" || fail "the client's proxy did not become ready"
echo "== weft-proxy spiffe://cluster.local/ns/demo/sa/client: outbound 127.0.0.1:$client_out -> Service app (127.0.10.1:$svc_port), admin :$client_admin"
for i in 0 1; do
  echo "== weft-proxy spiffe://cluster.local/ns/demo/sa/app (pod app-$i): inbound :${app_in[$i]} (strict mTLS), admin :${app_admin[$i]}"
done

declare -A seen=()
for i in $(seq 1 8); do
  # Concurrent pairs, so the balancer sees load as a real service would.
  a=$(curl -sS --max-time 5 "http://127.0.0.1:$client_out/" & curl -sS --max-time 5 "http://127.0.0.1:$client_out/"; wait)
  while read -r body; do
    [ -n "$body" ] || continue
    case "$body" in
      "hello from app-0 behind weft" | "hello from app-1 behind weft") seen["$body"]=1 ;;
      *) fail "unexpected answer: $body" ;;
    esac
  done <<<"$a"
done
echo "   16 requests, curl -> client proxy -> balanced, mTLS -> pod proxy -> app; answered by: ${!seen[*]}"
[ "${#seen[@]}" = 2 ] || fail "requests did not reach both pods"

echo "== the client proxy's metrics (curl http://127.0.0.1:$client_admin/metrics):"
metrics=$(curl -sS --max-time 5 "http://127.0.0.1:$client_admin/metrics")
echo "$metrics" | grep -E '^weft_(requests_total|tls_handshakes_total\{.*result="ok"|identity_cert_expiry|config_updates_total.*applied)' | grep -v ' 0$' | sed 's/^/   /'
total=$(echo "$metrics" | grep -E '^weft_requests_total\{client_id="spiffe://cluster.local/ns/demo/sa/client",direction="outbound",dst_endpoint="127.0.0.2[01]:'"$app_port"'",dst_service="demo/app:'"$svc_port"'",route="",server_id="spiffe://cluster.local/ns/demo/sa/app",status_code="200",tls="true"\}' | awk '{s+=$2} END {print s+0}')
[ "$total" = 16 ] || fail "the client proxy did not count 16 mTLS requests to the Service's endpoints with both identities (counted $total)"

echo "== the client proxy's view (curl http://127.0.0.1:$client_admin/config):"
curl -sS --max-time 5 "http://127.0.0.1:$client_admin/config" | sed 's/^/   /' | head -40

echo "== app-1 taken out of the YAML: new requests all go to app-0"
write_config 0
for _ in $(seq 1 100); do
  curl -sS --max-time 5 "http://127.0.0.1:$client_admin/config" | grep -q '127.0.0.21' || break
  sleep 0.1
done
for i in 1 2 3 4; do
  body=$(curl -sS --max-time 5 "http://127.0.0.1:$client_out/")
  [ "$body" = "hello from app-0 behind weft" ] || fail "after the removal, answered by: $body"
done
echo "   4 requests, all answered by app-0"
write_config 0 1

echo "== plaintext straight to the app's proxy is refused (strict mTLS):"
if curl -sS --max-time 5 "http://127.0.0.1:${app_in[0]}/" >/dev/null 2>&1; then
  fail "the app's proxy served plaintext in strict mode"
fi
refused=$(curl -sS --max-time 5 "http://127.0.0.1:${app_admin[0]}/metrics" | grep '^weft_inbound_connections_refused_total')
echo "   $refused"
echo "$refused" | grep -q 'plaintext_in_strict_mode"} 1' || fail "the refusal was not counted"

if $once; then
  echo "== ok"
  exit 0
fi
echo
echo "Try it yourself:  curl -v http://127.0.0.1:$client_out/"
echo "Its view:         curl http://127.0.0.1:$client_admin/config"
echo "Metrics:          curl http://127.0.0.1:$client_admin/metrics   (client's proxy)"
echo "                  curl http://127.0.0.1:${app_admin[0]}/metrics   (app-0's proxy)"
echo "                  curl http://127.0.0.1:$cp_admin/metrics   (control plane)"
echo "Edit the cluster: $work/config/cluster.yaml (reloaded on save; a bad edit is refused, see $work/control-plane.log)"
echo "Ctrl-C stops everything."
wait "$client_pid"
