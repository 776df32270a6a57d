#!/usr/bin/env bash
# How long weft-cni's ADD and DEL take (what it adds to a pod's start and stop), on the nft and
# the legacy backend: N rounds each in a private network namespace that carries no traffic.
# Root only. Usage: scripts/bench-cni.sh [WEFT_CNI_BINARY] [ROUNDS]
set -euo pipefail
bin=${1:-target/release/weft-cni}; n=${2:-30}
[ "$(id -u)" -eq 0 ] || { echo "bench-cni: needs root (network namespaces, iptables)" >&2; exit 1; }
[ -x "$bin" ] || { echo "bench-cni: $bin missing; run: cargo build --release -p weft-cni" >&2; exit 1; }
log=$(mktemp)
ns=weft-cni-bench-$$
ip netns add "$ns"; trap 'ip netns del "$ns"; rm -f "$log"' EXIT
conf() { printf '{"cniVersion":"1.0.0","name":"b","type":"weft-cni","logFile":"%s","iptablesBackend":"%s","args":{"cni":{"annotations":[{"key":"weft.dev/injected","value":"0.1.0"}]}},"prevResult":{"cniVersion":"1.0.0","ips":[]}}' "$log" "$1"; }
for be in nft legacy; do
  add=(); del=()
  for i in $(seq 1 $n); do
    t0=$(date +%s%N); conf $be | CNI_COMMAND=ADD CNI_CONTAINERID=c CNI_NETNS=/run/netns/$ns $bin >/dev/null; t1=$(date +%s%N)
    conf $be | CNI_COMMAND=DEL CNI_CONTAINERID=c CNI_NETNS=/run/netns/$ns $bin >/dev/null; t2=$(date +%s%N)
    add+=($(( (t1-t0)/1000 ))); del+=($(( (t2-t1)/1000 )))
  done
  med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  mx() { printf '%s\n' "$@" | sort -n | tail -1; }
  mn() { printf '%s\n' "$@" | sort -n | head -1; }
  echo "$be: ADD median $(med "${add[@]}") us [$(mn "${add[@]}")-$(mx "${add[@]}")], DEL median $(med "${del[@]}") us [$(mn "${del[@]}")-$(mx "${del[@]}")] over $n rounds"
done
