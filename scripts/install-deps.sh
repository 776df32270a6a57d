#!/usr/bin/env bash
# Installs Debian packages when their commands are missing: as root with apt-get it installs
# them; otherwise it says exactly what to install.
#
#   scripts/install-deps.sh                   what the tests and demo use (missing: a warning)
#   scripts/install-deps.sh --require CMD=PKG ...   these, and fail if they cannot be had
set -euo pipefail

require=false
if [ "${1:-}" = "--require" ]; then
  require=true
  shift
fi
# command=package pairs (a command starting with / is a file that must exist, for packages that
# install no command on PATH, such as the CNI reference plugins); the default set is what the
# tests and demo use.
pairs=("$@")
[ ${#pairs[@]} -gt 0 ] || pairs=(iptables=iptables ip=iproute2 setpriv=util-linux curl=curl python3=python3
  tcpdump=tcpdump /usr/lib/cni/bridge=containernetworking-plugins promtool=prometheus)

missing=()
for pair in "${pairs[@]}"; do
  cmd="${pair%%=*}"
  case "$cmd" in
    /*) [ -x "$cmd" ] || missing+=("${pair#*=}") ;;
    *) command -v "$cmd" >/dev/null 2>&1 || missing+=("${pair#*=}") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "install-deps: missing ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
if $require; then
  exit 1
fi
echo "install-deps: tests that need them will say SKIPPED" >&2
