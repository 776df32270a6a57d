#!/usr/bin/env bash
# What the benchmark needs beyond the build: HAProxy and openssl (Debian), and the load tool oha
# (crates.io, pinned so every run measures with the same client).
set -euo pipefail
OHA_VERSION=1.16.0

missing=()
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bench-deps: missing ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

oha_bin="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
if ! "$oha_bin" --version 2>/dev/null | grep -qx "oha $OHA_VERSION"; then
  echo "bench-deps: installing oha $OHA_VERSION from crates.io (a few minutes, once)"
  cargo install --locked --quiet "oha@$OHA_VERSION"
fi
