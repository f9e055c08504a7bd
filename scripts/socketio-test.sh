#!/usr/bin/env bash
# The official socket.io-client from npm against the gateway's Socket.IO endpoint
# (scripts/socketio-test/socketio.test.mjs), on the gateway binary and, for recovery after a
# kill -9, PostgreSQL from testkit-postgres. Installs its npm packages and builds both binaries
# unless GATEWAY_BIN and TESTKIT_POSTGRES_BIN are given.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ -z "${GATEWAY_BIN:-}" || -z "${TESTKIT_POSTGRES_BIN:-}" ]]; then
  cargo build --quiet -p switchboard-gateway --bin gateway -p switchboard-testkit --bin testkit-postgres
  export GATEWAY_BIN="${GATEWAY_BIN:-$repo/target/debug/gateway}"
  export TESTKIT_POSTGRES_BIN="${TESTKIT_POSTGRES_BIN:-$repo/target/debug/testkit-postgres}"
fi
# initdb and postgres (testkit-postgres) are off PATH on Debian.
export PATH="$PATH:/usr/lib/postgresql/15/bin"

cd scripts/socketio-test
npm ci --no-audit --no-fund
node --test --test-concurrency=1 socketio.test.mjs
