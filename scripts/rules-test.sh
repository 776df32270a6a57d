#!/usr/bin/env bash
# scripts/rules-test.sh: Weft's Prometheus rules (helm/weft/rules/weft.rules.yaml) checked by
# promtool (syntax, PromQL, names) and their unit tests run (helm/weft/rules/tests/*.yaml:
# input series, the recording rules' values, each alert firing and not). promtool comes from
# Debian's prometheus package, installed first when missing (scripts/install-deps.sh; as root,
# otherwise it says what to install and this fails). Any failure exits non-zero, saying which.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rules=$root/helm/weft/rules
"$root/scripts/install-deps.sh" --require promtool=prometheus

fail() {
  echo "rules-test: FAILED: $*" >&2
  exit 1
}

echo "rules-test: $(promtool --version 2>&1 | head -n 1)"
promtool check rules "$rules/weft.rules.yaml" || fail "promtool check rules $rules/weft.rules.yaml"

shopt -s nullglob
tests=("$rules"/tests/*.yaml)
[ ${#tests[@]} -gt 0 ] || fail "no unit tests in $rules/tests"
# promtool resolves each test file's rule_files from the file's own folder.
promtool test rules "${tests[@]}" || fail "promtool test rules (above: the test, the time, what was expected and what came)"
echo "rules-test: passed: 1 rules file, ${#tests[@]} test files"
