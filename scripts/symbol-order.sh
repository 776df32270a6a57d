#!/usr/bin/env bash
# Writes proxy/symbol-order.txt: the proxy's functions in the order the linker should lay them
# out (for release builds, proxy/build.rs turns it into a linker script for lld and hands lld
# the file itself as --symbol-ordering-file).
#
# Why: the kernel maps a binary's code into a process in 64 KiB windows around each page fault,
# so a proxy's resident code is every window in which start-up or idling touched one function.
# Left to itself the linker lays functions out by crate and codegen unit, and start-up touches
# most windows of the 8 MiB text. Laid out start-up first, then serving, the code a proxy runs
# sits in few windows and the rest is never mapped (BENCHMARKS.md, "the binary laid out by
# when its code runs").
#
# How: callgrind (which sees every function executed, unlike sampling) watches mesh proxies
# start, connect to a control plane and idle, then serve a first request, HTTP/1.1 load, HTTP/2
# and opaque TCP. Functions go in the phase that first ran them, in that order, each phase
# sorted by name so the file diffs well: a proxy that has only started maps the first part of
# the code, one that has served a first request the next, and so on.
#
# Symbol names carry a hash of their crate's build metadata (version, features, profile), not
# of their code, so a file made at one commit still places nearly every function at the next;
# names a build does not have are skipped (lld is told not to warn). ThinLTO's `.llvm.<hash>`
# suffixes hash a module's bytes, paths included, so proxy/build.rs matches them by pattern in
# a linker script. The features are those of the Makefile's release build (RELEASE_PACKAGES,
# built together): a binary built with another package set has other names and is laid out as
# before. Re-run after dependency updates or large changes: `make symbol-order` (a few
# minutes: proxies run under valgrind).
# `scripts/symbol-order.sh --check` says how much of the file the release binary has.
set -euo pipefail
cd "$(dirname "$0")/.."
order=proxy/symbol-order.txt
if [ "${1:-}" = --check ]; then
  binary=target/release/weft-proxy
  [ -x "$binary" ] || { echo "symbol-order: no $binary to check" >&2; exit 1; }
  # ThinLTO's `.llvm.<hash>` suffixes differ between checkouts; the link matches without them.
  stem() { sed 's/\.llvm\..*//' | sort -u; }
  listed=$(grep -v '^#' "$order" | stem | wc -l)
  placed=$(nm --defined-only "$binary" | awk '{ print $3 }' | stem |
    comm -12 - <(grep -v '^#' "$order" | stem) | wc -l)
  echo "symbol-order: $placed of the $listed functions in $order are in $binary"
  if [ $((placed * 10)) -lt $((listed * 9)) ]; then
    echo "symbol-order: under 90 %: the layout is stale (make symbol-order), so idle memory is higher" >&2
  fi
  exit 0
fi
[ -n "${RELEASE_PACKAGES:-}" ] || { echo "symbol-order: run it as make symbol-order (it needs RELEASE_PACKAGES)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "symbol-order: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
command -v curl >/dev/null || { echo "symbol-order: needs curl" >&2; exit 1; }
scripts/bench-deps.sh
oha="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
# shellcheck disable=SC2086
cargo build --release --locked -q $RELEASE_PACKAGES
bin=./target/release

# shellcheck source=scripts/local-mesh.sh
. scripts/local-mesh.sh
# Bounded wait for an HTTP endpoint (proxies under valgrind start in seconds, not milliseconds).
await() {
  for _ in $(seq 1 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "symbol-order: $1 never answered" >&2
  exit 1
}

up=$(free_port); tcp=$(free_port)
$bin/weft-bench server --http "127.0.0.1:$up" --tcp "127.0.0.1:$tcp" >/dev/null &
pids+=($!)

mesh_pki "$bin" order

# A Service with one endpoint (the HTTP server's pod) and an HTTPRoute on it: the discovery
# client's code (endpoints, routes, balancing) runs as it does in a cluster.
svc_port=$(free_port_on 127.0.10.1); in_http=$(free_port); in_tcp=$(free_port)
mkdir "$work/cluster"
{
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: api, namespace: order}
spec: {clusterIP: 127.0.10.1, ports: [{name: http, port: $svc_port}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api, namespace: order, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: $up}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: server-0, namespace: order}}]
---
YAML
  server_pod order "$in_http"
  cat <<YAML
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: order}
spec:
  parentRefs: [{group: '', kind: Service, name: api}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    timeouts: {request: 10s}
    backendRefs: [{name: api, port: $svc_port}]
YAML
} >"$work/cluster/cluster.yaml"
cp_port=$(free_port); cp_admin=$(free_port)
$bin/weft-control-plane --issuer "$work/pki/issuer" --tokens "$work/tokens" --log warn \
  --grpc-addr "127.0.0.1:$cp_port" --admin-addr "127.0.0.1:$cp_admin" \
  --source "local:$work/cluster" --config-poll-interval 100ms &
pids+=($!)
await "http://127.0.0.1:$cp_admin/ready"

# Five proxies under callgrind: the HTTP server's and the TCP server's (inbound, strict mTLS),
# clients that know their peer from a static map (HTTP, TCP) and one that learns it from the
# control plane. GLIBC_TUNABLES set here keeps the proxy from restarting itself (proxy/src/memcpy.rs),
# which valgrind would not follow.
ident=(WEFT_CONTROL_PLANE="127.0.0.1:$cp_port" WEFT_TRUST_ANCHORS="$work/pki/issuer/anchors.pem"
  WEFT_NAMESPACE=order WEFT_LOG=warn GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1073741824)
callgrind=(valgrind --tool=callgrind --demangle=no --compress-strings=no --dump-instr=no -q)
admins=(); proxies=()
run_proxy() {
  local name=$1 admin
  shift
  admin=$(free_port)
  env "${ident[@]}" WEFT_ADMIN_PORT="$admin" "$@" \
    "${callgrind[@]}" --callgrind-out-file="$work/cg.$name" $bin/weft-proxy &
  pids+=($!); proxies+=($!)
  admins+=("$admin")
}
server=(WEFT_SERVICE_ACCOUNT=server WEFT_IDENTITY_TOKEN_FILE="$work/server.token"
  WEFT_OUTBOUND_PORT=0 WEFT_INBOUND_MTLS=strict)
client=(WEFT_SERVICE_ACCOUNT=client WEFT_IDENTITY_TOKEN_FILE="$work/client.token" WEFT_INBOUND_PORT=0)
server_id=spiffe://cluster.local/ns/order/sa/server
out_static=$(free_port); out_tcp=$(free_port); out_service=$(free_port)
run_proxy http_server "${server[@]}" WEFT_INBOUND_PORT="$in_http" WEFT_INBOUND_TARGET="127.0.0.1:$up"
run_proxy tcp_server "${server[@]}" WEFT_INBOUND_PORT="$in_tcp" WEFT_INBOUND_TARGET="127.0.0.1:$tcp"
run_proxy static "${client[@]}" WEFT_OUTBOUND_PORT="$out_static" WEFT_OUTBOUND_TARGET="127.0.0.1:$up" \
  WEFT_MESH_DESTINATIONS="127.0.0.1:$up=$server_id@127.0.0.1:$in_http"
run_proxy tcp "${client[@]}" WEFT_OUTBOUND_PORT="$out_tcp" WEFT_OUTBOUND_TARGET="127.0.0.1:$tcp" \
  WEFT_MESH_DESTINATIONS="127.0.0.1:$tcp=$server_id@127.0.0.1:$in_tcp"
run_proxy service "${client[@]}" WEFT_OUTBOUND_PORT="$out_service" WEFT_OUTBOUND_TARGET="127.0.10.1:$svc_port"
for admin in "${admins[@]}"; do await "http://127.0.0.1:$admin/ready"; done
# Each phase ends with a dump of every proxy's counts (cg.NAME.1, .2, ...); a function goes in
# the phase that first ran it, so a proxy that has done only the first few things maps only the
# first part of the code.
phase=0
end_phase() {
  phase=$((phase + 1))
  for pid in "${proxies[@]}"; do callgrind_control -d "$pid" >/dev/null 2>&1; done
}
# 1. Idle: the timers and the control plane's streams run for a while, as in a quiet pod.
sleep 3
end_phase
# 2. A first request each way a pod's client reaches a Service (discovery and its route, the
#    static map), a scrape and probes of the admin port: what a new, quiet pod does.
curl -sf "http://127.0.0.1:$out_service/api/v1/orders" >/dev/null
curl -sf "http://127.0.0.1:$out_static/" >/dev/null
for admin in "${admins[@]}"; do
  curl -sf "http://127.0.0.1:$admin/metrics" >/dev/null
  curl -sf "http://127.0.0.1:$admin/live" >/dev/null
  curl -sf "http://127.0.0.1:$admin/ready" >/dev/null
done
end_phase
# 3. HTTP/1.1 under load (pooled connections, concurrent requests).
"$oha" --no-tui -n 300 -c 4 "http://127.0.0.1:$out_service/api/v1/orders" >/dev/null
"$oha" --no-tui -n 300 -c 4 "http://127.0.0.1:$out_static/" >/dev/null
end_phase
# 4. HTTP/2 callers.
"$oha" --no-tui -n 300 -c 4 --http2 -p 1 "http://127.0.0.1:$out_service/api/v1/orders" >/dev/null
"$oha" --no-tui -n 300 -c 4 --http2 -p 1 "http://127.0.0.1:$out_static/" >/dev/null
end_phase
# 5. Opaque TCP, both ways at once, more than one buffer at a time.
python3 - "$out_tcp" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
block = b"\x5a" * (256 * 1024)
for _ in range(8):
    s.sendall(block)
    got = 0
    while got < len(block):
        chunk = s.recv(len(block) - got)
        if not chunk:
            sys.exit("symbol-order: the TCP echo closed early")
        got += len(chunk)
s.close()
PY
end_phase

# The functions of the proxy's own binary (ob=) each dump executed (fn=), by name; then the
# file. Under valgrind's CPU, ring picks its portable code where this machine's CPU takes its
# ADX, AVX2 or VAES code: every variant of a primitive that ran (`..._nohw` and `..._adx`,
# `..._generic_masked` and `..._adx`; `__ecp_nistz256_*q` and `*x`) goes with it.
nm --defined-only "$bin/weft-proxy" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/symbols"
python3 - "$work" "$phase" "$work"/cg.* <<'PY'
import re
import sys

work, count, dumps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
symbols = set(open(f"{work}/symbols").read().split())
variant = re.compile(
    r"_(nohw|adx|avx2|avx|ssse3|sse41|hw|clmul|generic_masked|vpclmulqdq_avx2(_1)?|vaes_avx2)$"
)


def stem(name):
    name = variant.sub("", name)
    return re.sub(r"^(__ecp_nistz256_\w+)[qx]$", r"\1", name)


stems = {}
for name in symbols:
    if not name.startswith(("_ZN", "_R")):
        stems.setdefault(stem(name), set()).add(name)


# Where the variants differ in more than a suffix: X25519's ADX code and its field helpers, and
# AES-GCM's VAES code, called from Rust functions of their own.
families = [
    ("x25519", re.compile(r"^(fe4_\w+|fiat_25519_\w+|\w*fiat_curve25519_adx_\w+)$")),
    (
        "4ring4aead7aes_gcm",
        re.compile(r"4ring4aead7aes_gcm|aes_gcm_(enc|dec)_update_vaes_avx2|gcm_\w+_vpclmulqdq_avx2"),
    ),
]


def executed(phase):
    names = set()
    for dump in dumps:
        if not dump.endswith(f".{phase}"):
            continue
        ours = False
        for line in open(dump):
            if line.startswith("ob="):
                ours = line.rstrip().endswith("weft-proxy")
            elif ours and line.startswith(("fn=", "cfn=")):
                names.add(line.rstrip().split("=", 1)[1])
    with_variants = set(names)
    for name in names:
        with_variants |= stems.get(stem(name), set())
    for used, family in families:
        if any(used in name for name in names):
            with_variants |= {name for name in symbols if family.search(name)}
    return with_variants & symbols


# The C run-time's entry runs first of all; callgrind names it "(below main)".
groups, placed = [], set()
for phase in range(1, count + 1):
    names = executed(phase) - placed
    if phase == 1:
        names |= {"_start", "main"} & symbols
    groups.append(sorted(names))
    placed |= names
with open("proxy/symbol-order.txt", "w") as out:
    out.write("# The proxy's functions in link order (scripts/symbol-order.sh; proxy/build.rs), by the\n")
    out.write("# phase that first ran them: start-up and idling, a first request, HTTP/1.1 load,\n")
    out.write("# HTTP/2, opaque TCP.\n")
    for phase, names in enumerate(groups, 1):
        out.write(f"# phase {phase}: {len(names)} functions\n")
        out.write("".join(f"{name}\n" for name in names))
print("symbol-order: proxy/symbol-order.txt: functions by phase:", [len(g) for g in groups])
PY
