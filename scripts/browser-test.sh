#!/usr/bin/env bash
# End-to-end tests in headless Chromium against the real gateway binary: the dev chat page
# (scripts/browser-test/chat.test.mjs), and two users on the TypeScript client through nginx in
# front of three nodes on PostgreSQL and Redis, one of them killed, and socket.io-client's own
# browser build recovering its socket on another node after its node was killed (cluster.test.mjs).
# Installs what it needs (Chromium via apt-get when root, npm packages) and builds the binaries.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
if [[ "${#missing[@]}" -gt 0 ]]; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "browser-test: ${missing[*]} missing; run as root or: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "browser-test: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # policy-rc.d answering 101 keeps the packages from starting their system services.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [[ "$own_policy" -eq 0 ]] || rm -f /usr/sbin/policy-rc.d
fi

(
  cd scripts/browser-test
  if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund
  else
    npm install --no-audit --no-fund
  fi
)

# The default binaries are (re)built by cargo, which does nothing when they are up to date;
# binaries named by GATEWAY_BIN and TESTKIT_POSTGRES_BIN are used as they are.
if [[ -z "${GATEWAY_BIN:-}" || -z "${TESTKIT_POSTGRES_BIN:-}" ]]; then
  cargo build -p switchboard-gateway --bin gateway -p switchboard-testkit --bin testkit-postgres
  export GATEWAY_BIN="${GATEWAY_BIN:-target/debug/gateway}"
  export TESTKIT_POSTGRES_BIN="${TESTKIT_POSTGRES_BIN:-target/debug/testkit-postgres}"
fi
# initdb and postgres (for the cluster test's testkit-postgres) are off PATH on Debian.
export PATH="$PATH:/usr/lib/postgresql/15/bin:/usr/sbin"

# The dev chat page on one gateway, then the cluster: three nodes behind nginx, one killed.
exec node --test --test-concurrency=1 scripts/browser-test/chat.test.mjs scripts/browser-test/cluster.test.mjs
