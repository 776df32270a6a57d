#!/usr/bin/env bash
# cargo-deny over the workspace with deny.toml: licences, bans (duplicate versions) and sources.
# Installs cargo-deny from crates.io first when it is missing or another version (building it
# takes about 2.5 minutes on a 2-core machine, once).
#
# Advisories are not checked: the RustSec database lives on github.com, which this project's
# machines and CI cannot reach (deny.toml says more). Where it is reachable:
#   cargo deny check advisories
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned, so CI checks with the version the config was written for; a bump is this one line.
version=0.20.2

if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  echo "deny: installing cargo-deny $version from crates.io (about 2.5 minutes on 2 cores)"
  cargo install --locked "cargo-deny@$version"
fi
echo "deny: checking licences, bans and sources (advisories need github.com: not checked here)"
exec cargo deny --locked check bans licenses sources
