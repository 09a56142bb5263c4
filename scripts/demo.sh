#!/usr/bin/env bash
# Score the sample images end to end on this machine: installs what is missing, starts a
# local Redis (loopback) and one worker, submits samples/ (or the folder given), waits,
# prints the results table, and stops what it started. SQLite is the database.
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
