#!/usr/bin/env bash
# The README's "Run it" commands, typed as written from the repository root, so they cannot rot:
#
#   cargo run --release
#       dev mode: /healthz and the chat page answer on port 8080, and the log names
#       http://localhost:8080/ as the page to open;
#   export SWITCHBOARD_JWT_SECRET=$(openssl rand -hex 32)
#   cargo run --release &
#   cargo run --release -- token --user alice --name Alice --ttl 1h
#       prints a JWT that the running gateway accepts at /ws, and dev mode is off.
#
# Each gateway is stopped as Ctrl-C in a terminal stops it: SIGINT to its whole process group
# (cargo execs the gateway, but a wrapper that did not would get it too). It must then exit 0
# after its drain, leave no process in the group and free the port.
#
# Port 8080 is what the README promises, so this test uses it and no other: when something else
# listens there, it fails and says so instead of quietly testing a different command.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=8080
# Startup once built; the build itself runs first, without a deadline.
START_SECS=${README_TEST_START_SECS:-60}
STOP_SECS=${README_TEST_STOP_SECS:-30}

log() { printf 'readme-test: %s\n' "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}

# A fresh shell, as on a fresh clone: nothing of the gateway's configuration exported.
while IFS= read -r name; do
  case "$name" in
    SWITCHBOARD_* | DATABASE_URL | REDIS_URL) unset "$name" ;;
  esac
done < <(compgen -e)

for tool in cargo curl openssl setsid; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/test.sh installs it)"
done

WORK=$(mktemp -d)
GROUP="" # the process group (and pid) of the running `cargo run --release`
cleanup() {
  if [[ -n "$GROUP" ]] && kill -0 -- "-$GROUP" 2>/dev/null; then
    kill -KILL -- "-$GROUP" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

who_listens() {
  command -v ss >/dev/null && ss -Hltnp "sport = :$PORT" 2>/dev/null | head -n 3
}

show_log() {
  log "---- $1 ----"
  tail -n 40 "$1" >&2 || true
}

require_free_port() {
  if port_busy; then
    die "port $PORT is in use, and the README's gateway listens there. Stop what holds it and run again. $(who_listens)"
  fi
}

# start NAME: `cargo run --release` in a process group of its own, as a shell runs a foreground
# job, then waits until it says it is listening and answers /healthz.
start() {
  local name="$1" out="$WORK/$1.log"
  require_free_port
  log "$name: cargo run --release"
  setsid cargo run --release >"$out" 2>&1 &
  GROUP=$!
  local deadline=$((SECONDS + START_SECS))
  # Its own "listening" line as well as /healthz: a server another process started on the port
  # in between would answer too.
  until grep -q "gateway listening" "$out" &&
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/healthz"; do
    if ! kill -0 "$GROUP" 2>/dev/null; then
      show_log "$out"
      die "$name: the gateway exited before it was ready"
    fi
    if ((SECONDS >= deadline)); then
      show_log "$out"
      die "$name: not ready on port $PORT within ${START_SECS}s"
    fi
    sleep 0.2
  done
  # Field 5 of /proc/PID/stat is the process group (the gateway's name has no space in it).
  [[ "$(cut -d' ' -f5 "/proc/$GROUP/stat")" == "$GROUP" ]] ||
    die "setsid did not give cargo a process group of its own"
}

# stop NAME: SIGINT to the group, then the gateway must exit 0, alone, and free the port.
stop() {
  local name="$1" out="$WORK/$1.log" status=0
  kill -INT -- "-$GROUP"
  local deadline=$((SECONDS + STOP_SECS))
  while kill -0 -- "-$GROUP" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      show_log "$out"
      die "$name: still running ${STOP_SECS}s after SIGINT: $(ps -o pid=,args= -g "$GROUP" 2>/dev/null)"
    fi
    sleep 0.2
  done
  wait "$GROUP" || status=$?
  GROUP=""
  if [[ "$status" -ne 0 ]]; then
    show_log "$out"
    die "$name: exited with status $status after SIGINT"
  fi
  grep -q "stopped" "$out" || {
    show_log "$out"
    die "$name: exited without its drain ('stopped' not logged)"
  }
  ! port_busy || die "$name: port $PORT is still in use after the gateway stopped: $(who_listens)"
  log "$name: stopped by SIGINT, exit 0, nothing left running"
}

require_free_port # before a build that may take minutes
log "building (cargo build --release), so that startup has a deadline of its own"
cargo build --release --quiet

# ---- dev mode ---------------------------------------------------------------------------------
start dev
page="$(curl -fsS --max-time 5 "http://localhost:$PORT/")" || die "GET http://localhost:$PORT/ failed"
[[ "$page" == *"<html"* && "$page" == *Switchboard* ]] ||
  die "http://localhost:$PORT/ is not the chat page: ${page:0:200}"
grep -qF "Chat page: http://localhost:$PORT/" "$WORK/dev.log" || {
  show_log "$WORK/dev.log"
  die "the dev-mode log does not name http://localhost:$PORT/ as the chat page"
}
log "dev: /healthz and the chat page answer on http://localhost:$PORT/"
stop dev

# ---- a configured key and `token` ---------------------------------------------------------------
SWITCHBOARD_JWT_SECRET=$(openssl rand -hex 32)
export SWITCHBOARD_JWT_SECRET
start keyed
token="$(cargo run --release -- token --user alice --name Alice --ttl 1h 2>"$WORK/token.err")" || {
  show_log "$WORK/token.err"
  die "cargo run --release -- token … failed"
}
[[ "$token" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] ||
  die "the token command printed no JWT: ${token:0:200}"

# The WebSocket upgrade with that token: 101, and 401 for a token it did not sign.
upgrade() {
  curl -sS -o /dev/null -w '%{http_code}' --max-time 2 --http1.1 \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H "Authorization: Bearer $1" \
    "http://localhost:$PORT/ws" 2>/dev/null || true
}
[[ "$(upgrade "$token")" == 101 ]] || die "the gateway did not accept the printed token at /ws"
[[ "$(upgrade "${token%.*}.c2lnbmF0dXJl")" == 401 ]] || die "the gateway accepted a forged token"
dev_token="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://localhost:$PORT/dev/token?user=x")"
[[ "$dev_token" == 404 ]] || die "dev mode is still on with a key configured (/dev/token: $dev_token)"
log "keyed: the token command prints a JWT the gateway accepts; dev mode is off"
stop keyed

log "the README's run commands work as written"
