#!/usr/bin/env bash
# The Node tools of the dashboard checks (tools/node/package.json and its package-lock.json,
# pinned: @grafana/schema at the Grafana version the dashboards are written for, and the
# TypeScript compiler) installed with `npm ci` outside the source tree, in a folder named by a
# hash of those files and Node's version, so a second run only checks a stamp. Prints the
# folder holding node_modules as its last line; with --locate it only prints it (exit 3 when it
# has not been made). WEFT_TOOLS_CACHE moves the cache (default ~/.cache/weft).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "node-tools: no $tool on PATH (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
done
cache=${WEFT_TOOLS_CACHE:-$HOME/.cache/weft}/node
key=$( (sha256sum tools/node/package.json tools/node/package-lock.json scripts/node-tools.sh; node --version) | sha256sum | cut -c1-16)
out=$cache/$key
if [ "${1:-}" = --locate ]; then
  if [ -f "$out/stamp" ]; then echo "$out"; exit 0; fi
  echo "no install of tools/node in $out (run scripts/node-tools.sh)" >&2
  exit 3
fi
if [ -f "$out/stamp" ]; then
  echo "$out"
  exit 0
fi
rm -rf "$out"
mkdir -p "$out"
cp tools/node/package.json tools/node/package-lock.json "$out/"
# `npm ci`: exactly the lock file's versions and hashes; no install scripts run.
(cd "$out" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
node --version > "$out/stamp"
echo "node-tools: installed tools/node ($out)" >&2
echo "$out"
