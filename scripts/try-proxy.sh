#!/usr/bin/env bash
# Try weft-proxy on loopback, no root and no iptables needed:
#
#   client (curl) -> weft-proxy outbound listener (explicit mode) -> a small HTTP server
#
# It starts both, sends a few requests through the proxy, shows the proxy's metrics, and then
# keeps running so you can send your own (Ctrl-C stops everything). With --once it stops after
# the checks, failing loudly if any did not hold (CI runs it that way).
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

echo "== building weft-proxy (release)"
cargo build --release -q -p weft-proxy

# A server on a free port that answers every GET with a short page.
mkdir -p "$work/www" && echo "hello from the app behind weft" > "$work/www/index.html"
PYTHONUNBUFFERED=1 python3 -m http.server 0 --bind 127.0.0.1 --directory "$work/www" >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  port=$(grep -o 'port [0-9]*' "$work/server.log" | head -1 | cut -d' ' -f2 || true)
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "${port:-}" ] || { echo "the demo server did not start" >&2; exit 1; }
echo "== app server on 127.0.0.1:$port"

out_port=${WEFT_OUTBOUND_PORT:-15140}
admin_port=${WEFT_ADMIN_PORT:-15190}
if $once; then out_port=0; admin_port=0; fi
WEFT_OUTBOUND_TARGET="127.0.0.1:$port" WEFT_OUTBOUND_PORT=$out_port WEFT_INBOUND_PORT=0 \
  WEFT_ADMIN_PORT=$admin_port WEFT_LOG_FORMAT=json \
  ./target/release/weft-proxy >"$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  listening=$(grep '"listening"' "$work/proxy.log" || true)
  [ -n "$listening" ] && break
  sleep 0.05
done
[ -n "$listening" ] || { cat "$work/proxy.log" >&2; echo "weft-proxy did not start" >&2; exit 1; }
out_port=$(echo "$listening" | grep -o '"outbound":"127.0.0.1:[0-9]*' | grep -o '[0-9]*$')
admin_port=$(echo "$listening" | grep -o '"admin":"[^"]*' | grep -o '[0-9]*$')
echo "== weft-proxy outbound on 127.0.0.1:$out_port -> 127.0.0.1:$port, admin on :$admin_port"

for i in 1 2 3; do
  body=$(curl -sS --max-time 5 "http://127.0.0.1:$out_port/")
  echo "   request $i through the proxy: $body"
  [ "$body" = "hello from the app behind weft" ] || { echo "unexpected answer" >&2; exit 1; }
done
echo "== the proxy's metrics (curl http://127.0.0.1:$admin_port/metrics):"
metrics=$(curl -sS --max-time 5 "http://127.0.0.1:$admin_port/metrics")
echo "$metrics" | grep -E '^weft_(requests_total|tcp_connections_opened_total|tcp_bytes_total)' | sed 's/^/   /'
echo "$metrics" | grep -q 'weft_requests_total{direction="outbound",status_code="200"} 3' \
  || { echo "metrics did not count the 3 requests" >&2; exit 1; }

if $once; then
  echo "== ok"
  exit 0
fi
echo
echo "Try it yourself:  curl -v http://127.0.0.1:$out_port/"
echo "Metrics:          curl http://127.0.0.1:$admin_port/metrics"
echo "Ctrl-C stops the proxy and the server."
wait "${pids[1]}"
