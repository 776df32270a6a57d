#!/usr/bin/env bash
# Installs the Debian packages the tests and demo use, when they are missing.
# As root with apt-get it installs them; otherwise it says exactly what to install.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [iptables]=iptables
  [ip]=iproute2
  [setpriv]=util-linux
  [curl]=curl
  [python3]=python3
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "install-deps: missing ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
  echo "install-deps: tests that need them will say SKIPPED" >&2
fi
