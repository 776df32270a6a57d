#!/usr/bin/env bash
# The Python tools of the test tiers (tools/python/requirements.txt, pinned) in a venv outside
# the source tree, named by a hash of that file and the Python version, so a second run only
# checks a stamp. Prints the venv's bin directory as its last line; with --locate it only
# prints it (exit 3 when it has not been made). WEFT_TOOLS_CACHE moves the cache (default
# ~/.cache/weft).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
  echo "py-tools: no $python on PATH (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
cache=${WEFT_TOOLS_CACHE:-$HOME/.cache/weft}/py
key=$( (sha256sum tools/python/requirements.txt scripts/py-tools.sh; "$python" --version) | sha256sum | cut -c1-16)
out=$cache/$key
if [ "${1:-}" = --locate ]; then
  if [ -f "$out/stamp" ]; then echo "$out/bin"; exit 0; fi
  echo "no venv of tools/python/requirements.txt in $out (run scripts/py-tools.sh)" >&2
  exit 3
fi
if [ -f "$out/stamp" ]; then
  echo "$out/bin"
  exit 0
fi
# The venv is made where it stays (its scripts name their interpreter by absolute path); the
# stamp, written last, says it is whole.
rm -rf "$out"
mkdir -p "$cache"
if ! "$python" -m venv "$out" >&2; then
  # Debian's python3 ships venv without ensurepip: that is python3-venv.
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "py-tools: installing python3-venv" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$out"
    "$python" -m venv "$out" >&2
  else
    echo "py-tools: cannot make a venv; install python3-venv (sudo apt-get install python3-venv)" >&2
    exit 1
  fi
fi
# --no-deps: every package is pinned in the file, so nothing unpinned comes along.
"$out/bin/pip" install --quiet --disable-pip-version-check --no-deps \
  -r tools/python/requirements.txt >&2
"$python" --version > "$out/stamp"
echo "py-tools: installed tools/python/requirements.txt ($out)" >&2
echo "$out/bin"
