#!/usr/bin/env bash
# scripts/dashboards-preview.sh: pictures of Weft's Grafana dashboards for the README, drawn
# from real data: the demo mesh (examples/demo/mesh.yaml, its fault switch on, the canary
# moved from 90/10 to 50/50 halfway) with a real Prometheus scraping it runs for
# WEFT_DASHBOARDS_PREVIEW_SECONDS (180 by default; e2e/tests/dashboards.rs `preview_data`, as
# root: network namespaces), then scripts/dashboards-preview.py draws each dashboard from that
# data into docs/dashboards/<name>.png (matplotlib, in the venv of scripts/py-tools.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ "$(id -u)" -ne 0 ]; then
  echo "dashboards-preview: needs root (the demo mesh's network namespaces and iptables)" >&2
  exit 1
fi
scripts/install-deps.sh --require promtool=prometheus iptables=iptables ip=iproute2 \
  setpriv=util-linux /usr/lib/cni/bridge=containernetworking-plugins
py=$(scripts/py-tools.sh | tail -n 1)
target=${CARGO_TARGET_DIR:-$root/target}
data=$target/dashboards-preview/data.json
cargo build --locked -p weft-proxy -p weft-control-plane -p weft-cni
WEFT_DASHBOARDS_PREVIEW_OUT=$data WEFT_REQUIRE_NETNS_TESTS=1 \
  cargo test --locked -p weft-e2e --test dashboards preview_data -- --ignored --nocapture
"$py/python" scripts/dashboards-preview.py "$data" docs/dashboards
