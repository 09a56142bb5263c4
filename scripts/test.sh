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
# Two processes, each test module in one of them (module fixtures such as the viewer's stack are
# built once) with its own redis-server and PostgreSQL: much of the suite waits on subprocesses,
# so two overlap well even on two cores. MELANOMA_TEST_WORKERS=0 runs everything in this process.
"$PY" -m pytest -n "${MELANOMA_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
# pytest's "no tests collected" is not a pass.
exit "$rc"
