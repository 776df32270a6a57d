#!/usr/bin/env bash
# scripts/dashboards-check.sh: Weft's Grafana dashboards (helm/weft/dashboards/*.json) checked
# without a Grafana: they are what scripts/dashboards.py renders; they type-check against
# @grafana/schema at the pinned Grafana version (scripts/dashboards-schema.py, through the
# TypeScript of scripts/node-tools.sh); they pass the dashboard-linter's rules, their PromQL
# parsed by promtool (scripts/dashboards-lint.py, in the venv of scripts/py-tools.sh). Their
# queries run against a real Prometheus scraping the demo mesh in the netns tier
# (e2e/tests/dashboards.rs, part of `make unit`). Any failure exits non-zero, saying which.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh --require promtool=prometheus node=nodejs npm=npm

scripts/dashboards.py --check
node_tools=$(scripts/node-tools.sh | tail -n 1)
scripts/dashboards-schema.py "$node_tools"
py=$(scripts/py-tools.sh | tail -n 1)
"$py/python" scripts/dashboards-lint.py
