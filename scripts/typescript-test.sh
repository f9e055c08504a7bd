#!/usr/bin/env bash
# The TypeScript client (clients/typescript): its strict build, then its tests against the real
# gateway binary, and PostgreSQL started by testkit-postgres; then checks that the copy of its
# build the dev chat page imports (crates/gateway/assets/client/) is that build. Installs the
# client's npm dev dependencies (npm ci) and builds both binaries when needed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

cargo build --quiet -p switchboard-gateway --bin gateway -p switchboard-testkit --bin testkit-postgres
export GATEWAY_BIN="$repo/target/debug/gateway"
export TESTKIT_POSTGRES_BIN="$repo/target/debug/testkit-postgres"
# initdb and postgres are off PATH on Debian.
export PATH="$PATH:/usr/lib/postgresql/15/bin"

cd clients/typescript
npm ci --no-audit --no-fund
npm test
npm run check-assets
