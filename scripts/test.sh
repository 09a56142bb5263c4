#!/usr/bin/env bash
# Install everything and run the test suite against real servers: tests/conftest.py starts
# redis-server and a PostgreSQL cluster on loopback and stops them afterwards.
#   usage: scripts/test.sh [pytest args]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_venv cpu,test,pretrained
ensure_redis
ensure_postgres
ensure_chromium
export MELANOMA_REQUIRE_SERVERS=1   # a missing server fails the tests instead of skipping them
cd "$REPO"
log "lint, types and layers: ruff, mypy, import-linter"
"$VENV/bin/ruff" check . || die "ruff found problems (run: $VENV/bin/ruff check .)"
"$VENV/bin/ruff" format --check . >/dev/null || die "files need formatting (run: $VENV/bin/ruff format .)"
"$VENV/bin/mypy" || die "mypy found problems (run: $VENV/bin/mypy)"
"$VENV/bin/lint-imports" >/dev/null || { "$VENV/bin/lint-imports"; die "import-linter: a layer contract is broken"; }
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
# pytest's "no tests collected" is not a pass.
exit "$rc"
