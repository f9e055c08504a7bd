#!/usr/bin/env bash
# The official socket.io-client from npm against the gateway's Socket.IO endpoint
# (scripts/socketio-test/socketio.test.mjs). Installs its npm packages and builds the gateway
# when GATEWAY_BIN is not given.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ -z "${GATEWAY_BIN:-}" ]]; then
  cargo build --quiet -p switchboard-gateway --bin gateway
  export GATEWAY_BIN="$repo/target/debug/gateway"
fi

cd scripts/socketio-test
npm ci --no-audit --no-fund
node --test --test-concurrency=1 socketio.test.mjs
