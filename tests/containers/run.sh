#!/usr/bin/env bash
# Build the project's Dockerfile with podman and run docker-compose.yml's stack for real:
# Redis, PostgreSQL, two worker containers and a producer container that submits samples/.
# Asserts that every sample got a row, written by one of the two workers, and that both took
# part; checks the image (non-root, no pip or compiler, no tests) and reports its size.
# Everything the run starts is torn down on exit; images stay cached for the next run.
#
#   usage: tests/containers/run.sh          (needs root, or sudo, for apt and podman)
#          tests/containers/run.sh --clean  (remove the cached test images and build folders)
#
# These machines reach PyPI and Debian's archive but no registry of images, and nothing inside
# a build may reach the network. So:
#   - the base image is Debian bookworm made here with debootstrap and `podman import`;
#   - the Python dependencies are wheels built on the host into build/wheelhouse and installed
#     in the build with --no-index (--build-arg WHEELHOUSE=... OFFLINE=1), --network none;
#   - Redis and PostgreSQL images are built from that base with .deb files downloaded on the
#     host (redis.Containerfile, postgres.Containerfile) and given to compose through
#     MELANOMA_REDIS_IMAGE / MELANOMA_POSTGRES_IMAGE; on a normal machine compose pulls the
#     official images instead, and `docker build .` needs no build argument at all.
# podman runs with tests/containers/containers.conf (runc, ulimits, cgroupfs: see that file).
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
HERE="$REPO/tests/containers"
CACHE="$REPO/var/containers"
PROJECT=melanoma-ctest
BASE=localhost/melanoma-test-base:bookworm
APP=localhost/melanoma-scoring:ctest
REDIS_IMG=localhost/melanoma-test-redis:bookworm
PG_IMG=localhost/melanoma-test-postgres:bookworm
WORKERS=2
WEB_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export CONTAINERS_CONF="$HERE/containers.conf"
# One run at a time per user: two checkouts testing at once (two CI jobs on one machine) share the
# compose project, the image tag and podman's store, and one's cleanup stopped the other's stack.
exec 9>"${XDG_RUNTIME_DIR:-/tmp}/melanoma-ctest-$(id -u).lock"
flock 9

step() { log "containers: $*"; }
fail() { printf 'containers: FAIL: %s\n' "$*" >&2; exit 1; }
# quietly WHAT CMD...: run CMD with its output held back; if it fails, show the output, then fail.
quietly() {
  local what="$1" out
  shift
  if ! out="$("$@" 2>&1)"; then printf '%s\n' "$out" >&2; fail "$what"; fi
}

ensure_tools() {
  local missing=()
  for cmd in podman runc debootstrap curl; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  # netavark (podman's network) needs iptables, which a fresh Debian machine lacks.
  dpkg -s netavark aardvark-dns iptables >/dev/null 2>&1 || missing+=(netavark aardvark-dns iptables)
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    apt_install podman runc debootstrap curl netavark aardvark-dns iptables
  fi
  ensure_venv cpu,test   # podman-compose comes with the test extra
  COMPOSE=("$VENV/bin/podman-compose" -p "$PROJECT" -f "$REPO/docker-compose.yml")
}

build_base() {
  if podman image exists "$BASE"; then return; fi
  step "debootstrap bookworm (minbase + python3, python3-venv) -> $BASE"
  local root="$CACHE/rootfs"
  rm -rf "$root"; mkdir -p "$CACHE"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
    fail "debootstrap failed (see $CACHE/debootstrap.log)"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$root"
}

# service_image NAME IMAGE PACKAGE...: a context with the Containerfile's .deb files, built offline.
service_image() {
  local name="$1" image="$2"; shift 2
  local ctx="$CACHE/$name"
  step "building $image from Debian packages: $*"
  rm -rf "$ctx"; mkdir -p "$ctx/debs/partial"
  # Download what the base lacks: apt resolves against the base image's own package list.
  podman run --rm --network none "$BASE" cat /var/lib/dpkg/status >"$CACHE/base.status"
  local download=(apt-get -qq -o Dir::State::status="$CACHE/base.status" -o Dir::Cache::archives="$ctx/debs"
    -o Debug::NoLocking=1 install --download-only -y --no-install-recommends "$@")
  "${download[@]}" >/dev/null 2>&1 || { apt-get update -qq >&2; "${download[@]}" >/dev/null; }
  rm -rf "$ctx/debs/partial" "$ctx/debs/lock"
  cp "$HERE/postgres-entrypoint.sh" "$ctx/"
  podman build -q --network none --build-arg BASE_IMAGE="$BASE" -f "$HERE/$name.Containerfile" \
    -t "$image" "$ctx" >/dev/null
}

build_app() {
  # bookworm's Python is 3.11 like the host's, so the host's wheels fit. redis-py needs
  # async-timeout on Python < 3.11.3 (bookworm has 3.11.2); the host's newer Python skips it.
  "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || fail "the host's venv must be Python 3.11"
  step "wheelhouse for the image (pip wheel on the host)"
  mkdir -p "$REPO/build/wheelhouse"
  "$PY" -m pip wheel -q --wheel-dir "$REPO/build/wheelhouse" "$REPO[cpu,pretrained]" setuptools wheel async-timeout >&2
  rm -f "$REPO"/build/wheelhouse/melanoma_scoring-*.whl
  step "podman build (the project's Dockerfile, --network none) -> $APP"
  local previous
  previous="$(podman image inspect --format '{{.Id}}' "$APP" 2>/dev/null || true)"
  podman build -q --network none --build-arg BASE_IMAGE="$BASE" \
    --build-arg WHEELHOUSE=build/wheelhouse --build-arg OFFLINE=1 -t "$APP" "$REPO" >/dev/null
  # The tag's previous image is now untagged: drop it, or every local run leaves 1.7 GB behind
  # (once, the disk filled up mid-build). The build stage's layers stay as the build cache.
  if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$APP")" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
  fi
  # Each build whose inputs changed (every fresh clone) also leaves its build stage, 2.7 GB, untagged:
  # twelve runs filled this machine's disk. Keep the newest as the cache, remove the older ones.
  podman images --noheading --filter dangling=true --filter label=melanoma-scoring.stage=build \
    --format '{{.CreatedAt}} {{.ID}}' | sort -r | tail -n +2 | awk '{print $NF}' | xargs -r podman rmi -f >/dev/null 2>&1 \
    || true
}

check_image() {
  local size
  size="$(podman image inspect --format '{{.Size}}' "$APP")"
  # What the image must not carry: root user, pip, a compiler, the tests.
  podman run --rm --network none --entrypoint sh "$APP" -c '
    test "$(id -u)" = 10001 || { echo "runs as uid $(id -u)"; exit 1; }
    ! command -v pip >/dev/null || { echo "pip is in the image"; exit 1; }
    ! command -v gcc >/dev/null && ! command -v cc >/dev/null || { echo "a compiler is in the image"; exit 1; }
    # The project'"'"'s own tests (libraries such as scikit-learn ship test files of their own).
    ! find / -xdev -path /proc -prune -o -path "*/tests/e2e/test_pipeline.py" -print 2>/dev/null | grep -q . || { echo "tests are in the image"; exit 1; }
    melanoma --version >/dev/null' || fail "image check"
  IMAGE_MB=$(( size / 1000000 ))
  step "image $APP: $IMAGE_MB MB (base $(( $(podman image inspect --format '{{.Size}}' "$BASE") / 1000000 )) MB)"
}

teardown() {
  set +e
  step "tearing down"
  "${COMPOSE[@]}" down -v >/dev/null 2>&1
  rm -rf "$SECRETS"
}

# wait_healthy TIMEOUT CONTAINER...: run each container's compose healthcheck until it passes
# (podman 4.3 without systemd schedules no healthchecks itself, so this runs them).
wait_healthy() {
  local timeout="$1" c deadline; shift
  deadline=$(( $(date +%s) + timeout ))
  for c in "$@"; do
    until podman healthcheck run "$c" >/dev/null 2>&1; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        podman logs --tail 30 "$c" >&2 || true
        fail "$c not healthy after ${timeout}s"
      fi
      sleep 1
    done
  done
}

pg() { podman exec "${PROJECT}_postgres_1" psql -U melanoma -d melanoma -At -F ' ' -c "$1"; }

run_stack() {
  SECRETS="$(mktemp -d)"
  for s in redis_password postgres_password flower_password web_password; do
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRETS/$s"
  done
  chmod 644 "$SECRETS"/*   # read by the containers' non-root users
  export MELANOMA_IMAGE="$APP" MELANOMA_REDIS_IMAGE="$REDIS_IMG" MELANOMA_POSTGRES_IMAGE="$PG_IMG" \
    MELANOMA_SECRETS_DIR="$SECRETS" MELANOMA_DATA_DIR="$REPO/samples" MELANOMA_WORKERS="$WORKERS" \
    MELANOMA_BATCH_SIZE=2   # small batches, so that 18 images are spread over both workers
  "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true   # leftovers of an interrupted run
  # `down -v` finds volumes through the project's containers: one left without them (a run stopped
  # mid-way) kept the old database password, and the next run's services could not log in.
  podman volume ls -q --filter "name=^${PROJECT}_" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
  trap teardown EXIT

  step "compose up: redis, postgres"
  quietly "compose up redis postgres" "${COMPOSE[@]}" up -d redis postgres
  wait_healthy 90 "${PROJECT}_redis_1" "${PROJECT}_postgres_1"
  step "compose up: $WORKERS workers"
  quietly "compose up worker" "${COMPOSE[@]}" up -d --scale "worker=$WORKERS" worker
  local workers=()
  for i in $(seq "$WORKERS"); do workers+=("${PROJECT}_worker_$i"); done
  wait_healthy 240 "${workers[@]}"   # `melanoma ping`: each answers a Celery ping

  step "producer: submit samples/ and wait"
  local out job n_images
  out="$("${COMPOSE[@]}" --profile submit run -T --rm producer 2>&1)" || { echo "$out" >&2; fail "producer run"; }
  job="$(printf '%s\n' "$out" | tr -d '\r' | grep -Eo '^[0-9a-f]{32}$' | tail -n1)" || true
  [ -n "$job" ] || { echo "$out" >&2; fail "no job id in the producer's output"; }
  n_images="$(find "$REPO/samples" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | wc -l)"

  local rows ok hosts csv_rows
  rows="$(pg "select count(*) from predictions where job_id = '$job'")"
  ok="$(pg "select count(*) from predictions where job_id = '$job' and status = 'ok' and worker_host is not null")"
  hosts="$(pg "select worker_host, count(*) from predictions where job_id = '$job' group by 1 order by 1")"
  printf 'rows per worker:\n%s\n' "$hosts" >&2
  [ "$rows" = "$n_images" ] || fail "job $job has $rows rows for $n_images images"
  [ "$ok" = "$n_images" ] || fail "only $ok of $n_images rows were scored"
  [ "$(printf '%s\n' "$hosts" | wc -l)" = "$WORKERS" ] || fail "not all $WORKERS workers took part"
  local names
  names="$(for c in "${workers[@]}"; do podman inspect --format '{{.Config.Hostname}}' "$c"; done)"
  while read -r host _; do
    printf '%s\n' "$names" | grep -qx "${host#*@}" || fail "row from unknown worker $host"
  done <<<"$hosts"

  step "producer: results of job $job"
  csv_rows="$("${COMPOSE[@]}" --profile submit run -T --rm producer results "$job" --format csv 2>/dev/null |
    tail -n +2 | grep -c .)" || true
  [ "$csv_rows" = "$n_images" ] || fail "results CSV has $csv_rows rows for $n_images images"

  step "viewer: compose up web, published on 127.0.0.1:$WEB_PORT with a password"
  MELANOMA_WEB_PORT="$WEB_PORT" quietly "compose up web" "${COMPOSE[@]}" up -d web
  wait_healthy 90 "${PROJECT}_web_1"
  local url="http://127.0.0.1:$WEB_PORT" pw page thumb
  pw="$(cat "$SECRETS/web_password")"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/jobs/$job")" = 401 ] || fail "the viewer answered without a password"
  page="$(curl -sf -u "reviewer:$pw" "$url/jobs/$job")" || fail "viewer job page"
  printf '%s' "$page" | grep -q "$n_images images match" || fail "the viewer's job page does not show $n_images images"
  thumb="$(printf '%s' "$page" | grep -Eo '/images/[0-9]+/thumb.jpg' | head -n1)"
  [ "$(curl -s -u "reviewer:$pw" -o /dev/null -w '%{http_code} %{content_type}' "$url$thumb")" = "200 image/jpeg" ] ||
    fail "thumbnail $thumb not served"
  step "PASS: $n_images images, $rows rows, from $WORKERS workers, shown by the viewer; image $IMAGE_MB MB"
}

[ "$(id -u)" = 0 ] || exec sudo -E "$0" "$@"   # podman as root: rootless needs subuid setup
if [ "${1:-}" = "--clean" ]; then
  podman rmi -f "$APP" "$REDIS_IMG" "$PG_IMG" "$BASE" >/dev/null 2>&1 || true
  podman image prune -f >/dev/null
  rm -rf "$CACHE" "$REPO/build/wheelhouse"
  exit 0
fi
ensure_tools
build_base
service_image redis "$REDIS_IMG" redis-server
service_image postgres "$PG_IMG" postgresql-15
build_app
check_image
run_stack
