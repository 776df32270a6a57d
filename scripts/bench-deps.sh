#!/usr/bin/env bash
# What the benchmark needs beyond the build: HAProxy, openssl and prlimit (Debian), and the
# load tool oha (crates.io, pinned so every run measures with the same client).
set -euo pipefail
OHA_VERSION=1.16.0

"$(dirname "$0")/install-deps.sh" --require haproxy=haproxy openssl=openssl prlimit=util-linux

oha_bin="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
if ! "$oha_bin" --version 2>/dev/null | grep -qx "oha $OHA_VERSION"; then
  echo "bench-deps: installing oha $OHA_VERSION from crates.io (a few minutes, once)"
  cargo install --locked --quiet "oha@$OHA_VERSION"
fi
