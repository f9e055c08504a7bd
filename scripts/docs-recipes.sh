#!/usr/bin/env bash
# Runs the shell recipes of a document as a reader would type them: every ```sh block of the
# file, in order, in one fresh bash that stops at the first failing command. Used for
# docs/api.md, whose recipes start a gateway on port 8080 and call every server API route.
#
#   scripts/docs-recipes.sh docs/api.md
set -euo pipefail
cd "$(dirname "$0")/.."

DOC=${1:?usage: scripts/docs-recipes.sh <file.md>}
LIMIT_SECS=${DOCS_RECIPES_SECS:-600}

log() { printf 'docs-recipes: %s\n' "$*" >&2; }

WORK=$(mktemp -d)
GROUP=""
cleanup() {
  if [[ -n "$GROUP" ]] && kill -0 -- "-$GROUP" 2>/dev/null; then
    kill -KILL -- "-$GROUP" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The blocks, each command echoed before it runs (set -x), so a failure names its command.
{
  echo 'set -euo pipefail -x'
  awk '/^```sh$/ { inside = 1; next } /^```$/ { inside = 0; next } inside { print }' "$DOC"
} >"$WORK/recipe.sh"
[[ $(wc -l <"$WORK/recipe.sh") -gt 1 ]] || { log "FAIL: no sh block in $DOC"; exit 1; }

# A fresh shell, as on a fresh clone: nothing of the gateway's configuration exported.
while IFS= read -r name; do
  case "$name" in
    SWITCHBOARD_* | DATABASE_URL | REDIS_URL) unset "$name" ;;
  esac
done < <(compgen -e)

log "running the sh blocks of $DOC"
setsid timeout "$LIMIT_SECS" bash "$WORK/recipe.sh" >"$WORK/out" 2>&1 &
GROUP=$!
if ! wait "$GROUP"; then
  log "FAIL: a command of $DOC failed; its output:"
  tail -n 60 "$WORK/out" >&2
  exit 1
fi
log "every recipe of $DOC ran"
