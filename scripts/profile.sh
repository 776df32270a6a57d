#!/usr/bin/env bash
# Where weft-proxy's instructions go, per request: callgrind counts instructions (repeatable,
# unlike time on a shared machine) while oha sends a fixed number of requests through one proxy
# in explicit mode to the bench upstream. Prints instructions per request and the top functions.
#
# With a third argument the request crosses the mesh hop: two proxies with certificates from a
# control plane (mTLS, HTTP/2 between them), and callgrind watches the client's proxy
# (`mesh-outbound`) or the server's (`mesh-inbound`). There the client's proxy knows its peer
# from a static map (`WEFT_MESH_DESTINATIONS`).
#
# The `service*` hops are the same mesh hop reached through discovery instead: the control
# plane reads a folder of YAML (local mode), the client's proxy sends to Service `profile/api`'s
# cluster IP (127.0.10.1, nothing listens there) and learns its endpoint (the server's pod) and
# its routes; callgrind watches the client's proxy. What differs is only the Service's routes
# (issue 15):
#   service            no route: the Service is balanced over its endpoints as without routes;
#   service-route      one HTTPRoute, one rule (PathPrefix `/`), two weighted backends
#                      (`api-v1` 90, `api-v2` 10: Services with the same pod);
#   service-100-rules  ten HTTPRoutes of ten rules: 99 rules match PathPrefix `/service-N/v1`
#                      and do not match, the last one (PathPrefix `/`, as service-route) does.
#   service-route-policy  service-route with timeouts (request 10s, backendRequest 5s) and a
#                      retry policy (2 attempts on 503) that never retries (issue 16).
# Requests go to /api/v1/orders?page=2 on these hops (`/` on the others). The script checks from
# the client proxy's metrics that the requests went where the routes say.
#
# With PROFILE_TRACE set (a sampling share: 0, 0.01, 1) the plain hop's proxy traces
# (WEFT_TRACE_COLLECTOR, WEFT_TRACE_SAMPLING) to a real Jaeger on loopback (scripts/jaeger-build.sh),
# so the figure includes the span export on the proxy's own thread; unset, tracing is off.
#
# With PROFILE_TAP (plain hop) the proxy's tap is: off (WEFT_TAP=off), idle (on, nobody
# tapping: the default), miss (a reader whose filter matches no request), match (a reader of
# every request, curl writing the stream to /dev/null); the admin thread that streams the
# events is profiled too.
#
# With PROFILE_TOOL=strace the proxy runs at full speed and `strace -c -f` counts its system
# calls (and their errors: EAGAIN is a read or write that found nothing to do) during the
# measured requests instead of callgrind's instructions: the kernel's half of the cost.
#
# With PROFILE_TOOL=proc the proxy runs at full speed and its user and kernel CPU time and its
# threads' context switches (a voluntary one is a sleep: a wake-up per event it waited for) are
# read from /proc before and after the measured requests.
#
# PROFILE_RATE sends the measured requests at that many per second (oha's open loop) instead
# of as fast as they are answered: at a low rate every request waits on its own wake-ups.
#
# PROFILE_PROXY names another weft-proxy binary to run in place of target/release/weft-proxy
# (every proxy of the hop): an earlier commit's build, for a before-and-after on one machine.
#
# Usage: scripts/profile.sh [http1|http2] [REQUESTS]
#          [plain|mesh-outbound|mesh-inbound|service|service-route|service-100-rules|service-route-policy]
set -euo pipefail
cd "$(dirname "$0")/.."
proto=${1:-http1}
n=${2:-20000}
hop=${3:-plain}
# Concurrent client connections (PROFILE_CONNS, default 4). With 1, every request takes the
# same path (no wake-ups or frames shared between requests), so two set-ups' figures differ
# by what differs between them and not by how requests happened to bunch: use it to compare.
conns=${PROFILE_CONNS:-4}
case "$hop" in
  plain | mesh-outbound | mesh-inbound | service | service-route | service-100-rules | service-route-policy) ;;
  *) echo "profile: unknown hop $hop" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "profile: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
scripts/bench-deps.sh
oha="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
# shellcheck disable=SC2086
cargo build --release --locked -q ${RELEASE_PACKAGES:--p weft-proxy -p weft-control-plane -p weftctl -p weft-bench}
proxy=${PROFILE_PROXY:-./target/release/weft-proxy}
[ -x "$proxy" ] || { echo "profile: $proxy is not an executable" >&2; exit 2; }

# shellcheck source=scripts/local-mesh.sh
. scripts/local-mesh.sh
path=/

# The `service*` hops' cluster (namespace `profile`): Service `api` and, for routes, `api-v1`
# and `api-v2`, each with the server's pod as its one endpoint (the upstream behind the server's
# proxy, reached over mTLS as that pod's identity), and the routes of the hop.
cluster_yaml() {
  local i=0 name ip
  for name in api api-v1 api-v2; do
    i=$((i + 1)); ip=127.0.10.$i
    [ "$name" = api ] || [ "$1" != service ] || continue
    cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: profile}
spec: {clusterIP: $ip, ports: [{name: http, port: $svc_port}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $name, namespace: profile, labels: {kubernetes.io/service-name: $name}}
addressType: IPv4
ports: [{name: http, port: $up}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: server-0, namespace: profile}}]
---
YAML
  done
  server_pod profile "$in_port"
  local backends="[{name: api-v1, port: $svc_port, weight: 90}, {name: api-v2, port: $svc_port, weight: 10}]"
  case "$1" in
    service-route | service-route-policy)
      local policy=""
      [ "$1" = service-route-policy ] &&
        policy=$'\n    timeouts: {request: 10s, backendRequest: 5s}\n    retry: {attempts: 2, codes: [503], backoff: 10ms}'
      cat <<YAML
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: profile}
spec:
  parentRefs: [{group: '', kind: Service, name: api}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]$policy
    backendRefs: $backends
YAML
      ;;
    service-100-rules)
      # At most 16 rules per HTTPRoute (the Gateway API's limit): ten routes of ten.
      local r k prefix
      for r in $(seq 0 9); do
        printf -- '---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n'
        printf 'metadata: {name: api-%s, namespace: profile}\nspec:\n' "$r"
        printf "  parentRefs: [{group: '', kind: Service, name: api}]\n  rules:\n"
        for k in $(seq 0 9); do
          if [ "$r$k" = 99 ]; then prefix=/; else prefix="/service-$((r * 10 + k))/v1"; fi
          printf '  - matches: [{path: {type: PathPrefix, value: %s}}]\n    backendRefs: %s\n' "$prefix" "$backends"
        done
      done
      ;;
  esac
}
up=$(free_port); out=$(free_port); admin=$(free_port)
./target/release/weft-bench server --http "127.0.0.1:$up" --tcp "127.0.0.1:$(free_port)" >/dev/null &
pids+=($!)
tool=${PROFILE_TOOL:-callgrind}
case "$tool" in
  callgrind) callgrind=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" -q) ;;
  strace) command -v strace >/dev/null || apt-get install -y -q strace >/dev/null; callgrind=() ;;
  proc) callgrind=() ;;
  *) echo "profile: PROFILE_TOOL is callgrind, strace or proc" >&2; exit 2 ;;
esac
trace=()
if [ -n "${PROFILE_TRACE:-}" ]; then
  [ "$hop" = plain ] || { echo "profile: PROFILE_TRACE is for the plain hop" >&2; exit 2; }
  jaeger=$(scripts/jaeger-build.sh | tail -1)
  otlp=$(free_port); query=$(free_port)
  cat >"$work/jaeger.yaml" <<YAML
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {receivers: [otlp], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}, traces: {level: none}, logs: {level: warn}}
extensions:
  jaeger_storage: {backends: {memstore: {memory: {max_traces: 100000}}}}
  jaeger_query:
    storage: {traces: memstore}
    enable_tracing: false
    http: {endpoint: "127.0.0.1:$query"}
    grpc: {endpoint: "127.0.0.1:0"}
receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:$otlp"}}}
exporters:
  jaeger_storage_exporter: {trace_storage: memstore}
YAML
  env -i PATH="$PATH" "$jaeger" --config "$work/jaeger.yaml" >"$work/jaeger.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$query/api/services" >/dev/null 2>&1 && break; sleep 0.1; done
  trace=(WEFT_TRACE_COLLECTOR="127.0.0.1:$otlp" WEFT_TRACE_SAMPLING="$PROFILE_TRACE")
fi
tap=${PROFILE_TAP:-idle}
case "$tap" in idle | off | miss | match) ;; *) echo "profile: PROFILE_TAP is off, idle, miss or match" >&2; exit 2 ;; esac
[ "$tap" = idle ] || [ "$hop" = plain ] || { echo "profile: PROFILE_TAP is for the plain hop" >&2; exit 2; }
tap_env=(WEFT_TAP=on)
[ "$tap" = off ] && tap_env=(WEFT_TAP=off)
if [ "$hop" = plain ]; then
  env WEFT_OUTBOUND_PORT=$out WEFT_INBOUND_PORT=0 WEFT_ADMIN_PORT=$admin WEFT_LOG=warn \
    WEFT_OUTBOUND_TARGET="127.0.0.1:$up" "${trace[@]}" "${tap_env[@]}" \
    "${callgrind[@]}" "$proxy" &
  pids+=($!)
  profiled=${pids[-1]}
else
  bin=./target/release
  mesh_pki "$bin" profile
  cp_port=$(free_port); cp_admin=$(free_port); in_port=$(free_port); other_admin=$(free_port)
  source_args=()
  client_dst=(WEFT_OUTBOUND_TARGET="127.0.0.1:$up"
    WEFT_MESH_DESTINATIONS="127.0.0.1:$up=spiffe://cluster.local/ns/profile/sa/server@127.0.0.1:$in_port")
  case "$hop" in service*)
    svc_port=$(free_port_on 127.0.10.1)
    mkdir "$work/cluster"
    cluster_yaml "$hop" >"$work/cluster/cluster.yaml"
    source_args=(--source "local:$work/cluster" --config-poll-interval 100ms)
    client_dst=(WEFT_OUTBOUND_TARGET="127.0.10.1:$svc_port")
    path="/api/v1/orders?page=2"
    ;;
  esac
  $bin/weft-control-plane --issuer "$work/pki/issuer" --tokens "$work/tokens" --log warn \
    --grpc-addr "127.0.0.1:$cp_port" --admin-addr "127.0.0.1:$cp_admin" "${source_args[@]}" &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$cp_admin/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  ident=(WEFT_CONTROL_PLANE="127.0.0.1:$cp_port" WEFT_TRUST_ANCHORS="$work/pki/issuer/anchors.pem"
    WEFT_NAMESPACE=profile WEFT_LOG=warn)
  server=(env "${ident[@]}" WEFT_SERVICE_ACCOUNT=server WEFT_IDENTITY_TOKEN_FILE="$work/server.token"
    WEFT_INBOUND_PORT="$in_port" WEFT_INBOUND_TARGET="127.0.0.1:$up" WEFT_OUTBOUND_PORT=0)
  client=(env "${ident[@]}" WEFT_SERVICE_ACCOUNT=client WEFT_IDENTITY_TOKEN_FILE="$work/client.token"
    WEFT_OUTBOUND_PORT="$out" WEFT_INBOUND_PORT=0 "${client_dst[@]}")
  if [ "$hop" = mesh-inbound ]; then
    "${server[@]}" WEFT_ADMIN_PORT="$admin" "${callgrind[@]}" "$proxy" &
    pids+=($!); profiled=${pids[-1]}
    "${client[@]}" WEFT_ADMIN_PORT="$other_admin" "$proxy" &
    pids+=($!)
  else
    "${server[@]}" WEFT_ADMIN_PORT="$other_admin" "$proxy" &
    pids+=($!)
    "${client[@]}" WEFT_ADMIN_PORT="$admin" "${callgrind[@]}" "$proxy" &
    pids+=($!); profiled=${pids[-1]}
  fi
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$other_admin/ready" >/dev/null 2>&1 && break; sleep 0.1; done
fi
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
case "$tap" in
  miss | match)
    query="limit=100000"
    [ "$tap" = miss ] && query="$query&path=/no-request-has-this-path"
    curl -sfN "http://127.0.0.1:$admin/tap?$query" >"$work/tap.out" &
    pids+=($!)
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$admin/metrics" | grep -q '^weft_tap_streams 1' && break
      sleep 0.1
    done
    ;;
esac
flags=()
[ "$proto" = http2 ] && flags=(--http2 -p 1)
rate=()
[ -n "${PROFILE_RATE:-}" ] && rate=(-q "$PROFILE_RATE")
# User and system clock ticks, then voluntary and involuntary context switches of every thread.
proc_counts() {
  cut -d' ' -f14,15 "/proc/$1/stat"
  cat "/proc/$1"/task/*/status | awk '/^voluntary_ctxt_switches/ {v += $2}
    /^nonvoluntary_ctxt_switches/ {n += $2} END {print v, n}'
}
"$oha" --no-tui -n 200 -c "$conns" "${flags[@]}" "http://127.0.0.1:$out$path" >/dev/null  # warm-up
# Only the measured requests are counted: zero the counters, measure, dump (this process only).
if [ "$tool" = strace ]; then
  strace -c -f -p "$profiled" -o "$work/strace.out" 2>/dev/null &
  tracer=$!
  # Every thread traced before the first request (strace attaches to them one by one).
  for _ in $(seq 1 100); do
    if ! grep -q '^TracerPid:[[:space:]]*0$' "/proc/$profiled"/task/*/status; then break; fi
    sleep 0.05
  done
elif [ "$tool" = proc ]; then
  before=$(proc_counts "$profiled")
else
  callgrind_control -z "$profiled" >/dev/null
fi
"$oha" --no-tui -n "$n" -c "$conns" "${flags[@]}" "${rate[@]}" "http://127.0.0.1:$out$path" >/dev/null
if [ "$tool" = strace ]; then
  kill -INT "$tracer"
  wait "$tracer" || true
elif [ "$tool" = proc ]; then
  after=$(proc_counts "$profiled")
else
  callgrind_control -d "$profiled" >/dev/null
fi
sleep 1
case "$hop" in service*)
  # Where the requests went, by the client proxy's request metrics: every one answered 200, by
  # the Service itself without routes and by its backends with them.
  metrics=$(curl -sf "http://127.0.0.1:$admin/metrics")
  served() {
    grep '^weft_requests_total{' <<<"$metrics" | grep 'direction="outbound"' |
      grep "dst_service=\"profile/$1:$svc_port\"" | grep 'status_code="200"' |
      awk '{s += $NF} END {print s + 0}' || true  # no line is a count of 0, not a failure
  }
  all=$((n + 200)); api=$(served api); v1=$(served api-v1); v2=$(served api-v2)
  echo "profile: 200s by backend: api $api, api-v1 $v1, api-v2 $v2 (of $all)"
  if [ "$hop" = service ]; then ok=$((api == all)); else ok=$((api == 0 && v1 + v2 == all && v2 > 0)); fi
  [ "$ok" = 1 ] || { echo "profile: the requests did not go where the $hop routes say" >&2; exit 1; }
  ;;
esac
if [ -n "${PROFILE_TRACE:-}" ]; then
  # What became of the spans (the last batch may still be on its way: the flush is 1 s).
  sleep 1.5
  spans=$(curl -sf "http://127.0.0.1:$admin/metrics" | grep '^weft_trace_spans_total' | tr '\n' ' ')
  echo "profile: tracing at $PROFILE_TRACE: $spans"
fi
if [ "$tap" = miss ] || [ "$tap" = match ]; then
  events=$(curl -sf "http://127.0.0.1:$admin/metrics" | grep '^weft_tap_events_total' | tr '\n' ' ')
  echo "profile: tap $tap: $events; $(wc -l <"$work/tap.out") lines read"
fi
curl -sf -XPOST "http://127.0.0.1:$admin/shutdown" >/dev/null
wait "$profiled" 2>/dev/null || true
if [ "$tool" = proc ]; then
  echo "profile: $proto over $hop, $n requests, $conns connections${PROFILE_RATE:+, $PROFILE_RATE per second}: per request"
  # shellcheck disable=SC2086
  set -- $before $after
  awk -v n="$n" -v hz="$(getconf CLK_TCK)" -v u0="$1" -v s0="$2" -v v0="$3" -v i0="$4" \
    -v u1="$5" -v s1="$6" -v v1="$7" -v i1="$8" 'BEGIN {
      printf "%8.1f µs user CPU\n%8.1f µs kernel CPU\n", (u1 - u0) / hz / n * 1e6, (s1 - s0) / hz / n * 1e6
      printf "%8.2f voluntary context switches (sleeps)\n%8.2f involuntary\n", (v1 - v0) / n, (i1 - i0) / n
    }'
  exit 0
fi
if [ "$tool" = strace ]; then
  echo "profile: $proto over $hop, $n requests, $conns connections: system calls per request"
  # strace's table: % time, seconds, usecs/call, calls, errors, syscall.
  awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
      name = $NF; calls = $4; errors = (NF == 6) ? $5 : 0
      printf "%8.2f  %8.2f errors  %s\n", calls / n, errors / n, name; total += calls
    }
    END { printf "%8.2f  in all\n", total / n }' "$work/strace.out" | sort -rn
  exit 0
fi
dump=$(ls -t "$work"/callgrind.out* | grep -v '\.out$' | head -1 || true)
[ -n "$dump" ] || dump="$work/callgrind.out"
cp "$dump" "${PROFILE_OUT:-/tmp/weft-profile.out}"
total=$(callgrind_annotate "$dump" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | awk '{gsub(",","",$1); print $1}')
echo "profile: $proto over $hop, $n requests: $total instructions, $((total / n)) per request"
# `sed` reads its input to the end: `head` would leave callgrind_annotate to die of SIGPIPE, which
# ends the script under pipefail.
callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null | grep -E "^ *[0-9,]+ \(" | sed -n 1,40p
# The same instructions by the crate of the function that ran them (code inlined into a
# function counts for that function's crate; generic code for the crate that names it first,
# `<hyper::proto::h2::...>` for hyper): which library the cost per request is in.
echo "profile: instructions per request by crate"
callgrind_annotate --inclusive=no --auto=no --threshold=100 "$dump" 2>/dev/null |
  grep -E "^ *[0-9,]+ \(" | sed 's/,//g' | awk -v n="$n" '
    $2 ~ /^\((9[0-9]|100)\./ { next }  # main and the frames below it: inclusive, not own cost
    {
      cost = $1; line = $0; sub(/^ *[0-9]+ \([^)]*\) +/, "", line)
      fn = line; sub(/^[^:]*:/, "", fn); sub(/ \[.*$/, "", fn)
      sub(/^</, "", fn); sub(/^core::ptr::drop_in_place</, "", fn)
      crate = fn; sub(/::.*$/, "", crate); sub(/<.*$/, "", crate)
      if (line ~ /libc\.so/) crate = line ~ /malloc/ ? "libc malloc" : line ~ /mem(move|cpy|set|cmp)/ ? "libc mem*" : "libc"
      else if (line ~ /ring-0[^:]*\.S:/) crate = "ring (assembly)"
      sum[crate] += cost; total += cost
    }
    END {
      for (c in sum) if (sum[c] / n >= 100) printf "%9d  %5.1f%%  %s\n", sum[c] / n, 100 * sum[c] / total, c
    }' | sort -rn | sed -n 1,20p
echo "profile: the whole dump is in ${PROFILE_OUT:-/tmp/weft-profile.out} (callgrind_annotate, kcachegrind)"
