#!/usr/bin/env bash
# Score the sample images end to end on this machine: installs what is missing, starts a
# local Redis (loopback) and one worker, submits samples/ (or the folder given), waits,
# prints the results table, and stops what it started. SQLite is the database.
# With MELANOMA_DEMO_SERVE=1 it then keeps Redis and the worker running and serves the results
# viewer on http://127.0.0.1:8000/ (heat maps included) until Ctrl-C.
#   usage: scripts/demo.sh [FOLDER]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FOLDER="$(realpath "${1:-$REPO/samples}")"
[ -d "$FOLDER" ] || die "folder not found: $FOLDER"
ensure_venv cpu
ensure_redis

RUN="$REPO/var/demo"
mkdir -p "$RUN"
PORT="$(free_port)"
export MELANOMA_BROKER_URL="redis://127.0.0.1:$PORT/0"
export MELANOMA_DATABASE_URL="${MELANOMA_DATABASE_URL:-sqlite:///$REPO/var/melanoma.db}"
export MELANOMA_ALLOWED_ROOTS="$FOLDER"
MELANOMA="$VENV/bin/melanoma"

WORKER_PID=""
cleanup() {
  [ -n "$WORKER_PID" ] && kill -TERM "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
  stop_redis "$RUN"
}
trap cleanup EXIT

log "starting redis-server on 127.0.0.1:$PORT"
start_redis "$RUN" "$PORT"
log "starting a worker (log: $RUN/worker.log)"
"$MELANOMA" worker --loglevel INFO >"$RUN/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 600); do
  grep -q "worker process ready" "$RUN/worker.log" 2>/dev/null && break
  if ! kill -0 "$WORKER_PID" 2>/dev/null; then
    tail -n 40 "$RUN/worker.log" >&2; WORKER_PID=""; die "the worker stopped (its log is above)"
  fi
  sleep 0.2
done

log "submitting $FOLDER"
JOB="$("$MELANOMA" submit "$FOLDER" --name demo --wait --timeout 600 | tail -n1)"
"$MELANOMA" status "$JOB"
echo
"$MELANOMA" results "$JOB"
echo
log "job $JOB done; results are in ${MELANOMA_DATABASE_URL#sqlite:///} (table predictions)"
VIEW="MELANOMA_DATABASE_URL=$MELANOMA_DATABASE_URL MELANOMA_ALLOWED_ROOTS=$FOLDER $MELANOMA serve"
if [ "${MELANOMA_DEMO_SERVE:-0}" = 1 ]; then
  log "results viewer: http://127.0.0.1:${MELANOMA_DEMO_PORT:-8000}/jobs/$JOB  (Ctrl-C stops everything)"
  "$MELANOMA" serve --port "${MELANOMA_DEMO_PORT:-8000}" || true
else
  log "look at them in the viewer: $VIEW   then open http://127.0.0.1:8000/jobs/$JOB"
  log "(or run MELANOMA_DEMO_SERVE=1 scripts/demo.sh: the viewer, with heat maps from a running worker)"
fi
