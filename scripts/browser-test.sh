#!/usr/bin/env bash
# End-to-end test of the dev chat page in headless Chromium against the real gateway binary.
# Installs what it needs (Chromium via apt-get when root, npm packages), builds the gateway when
# GATEWAY_BIN does not exist yet, then runs scripts/browser-test/chat.test.mjs.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "browser-test: /usr/bin/chromium is missing; run as root or: apt-get install chromium" >&2
    exit 1
  fi
  echo "browser-test: installing chromium" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

(
  cd scripts/browser-test
  if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund
  else
    npm install --no-audit --no-fund
  fi
)

# The default binary is (re)built by cargo, which does nothing when it is up to date; a binary
# named by GATEWAY_BIN is used as it is.
if [[ -z "${GATEWAY_BIN:-}" ]]; then
  cargo build -p switchboard-gateway --bin gateway
  export GATEWAY_BIN=target/debug/gateway
fi

exec node --test scripts/browser-test/chat.test.mjs
