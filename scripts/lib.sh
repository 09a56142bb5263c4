# Shared shell helpers for scripts/demo.sh and scripts/test.sh (sourced, not run).
# Installs what is missing, and starts/stops local servers bound to loopback only.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MELANOMA_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"; fi
}

_apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found: install $* with your system's package manager"
  if [ -z "$_apt_updated" ]; then as_root apt-get update -qq >&2; _apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_python() {
  # Python 3.11 is what the pinned TensorFlow/Celery set was tested with.
  PYTHON311="$(command -v python3.11 || true)"
  if [ -z "$PYTHON311" ] && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    PYTHON311="$(command -v python3)"
  fi
  if [ -z "$PYTHON311" ]; then apt_install python3.11 python3.11-venv; PYTHON311="$(command -v python3.11)"; fi
  "$PYTHON311" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3.11-venv
}

# ensure_venv [extras]: create .venv and install the project (editable) with the given extras.
ensure_venv() {
  local extras="${1:-}" spec="$REPO" stamp
  [ -n "$extras" ] && spec="$REPO[$extras]"
  stamp="$VENV/.installed-$(cat "$REPO/pyproject.toml" | sha256sum | cut -c1-16)-${extras:-base}"
  if [ -f "$stamp" ]; then return; fi
  ensure_python
  if [ ! -x "$PY" ]; then log "creating $VENV"; "$PYTHON311" -m venv "$VENV"; fi
  log "installing Python packages (first run downloads TensorFlow, a few minutes)"
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -m pip install -q -e "$spec" >&2
  touch "$stamp"
}

ensure_chromium() { { command -v chromium && command -v chromedriver; } >/dev/null || { log "installing chromium and chromium-driver (browser tests)"; apt_install chromium chromium-driver; }; }
ensure_redis() { command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; }; }

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
ensure_postgres() { [ -n "$(pg_bindir)" ] || { log "installing postgresql"; apt_install postgresql; }; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_redis DIR PORT: a throwaway redis-server on 127.0.0.1 only.
start_redis() {
  local dir="$1" port="$2"
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  die "redis-server did not start (see $dir/redis.log)"
}
stop_redis() { local dir="$1"; [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null; rm -f "$dir/redis.pid"; }

# start_postgres DIR PORT: a throwaway PostgreSQL cluster on 127.0.0.1, database "melanoma".
# PostgreSQL refuses to run as root, so as root the cluster belongs to the "postgres" user.
start_postgres() {
  local dir="$1" port="$2" bin run=()
  bin="$(pg_bindir)"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    run=(runuser -u postgres --)
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir" && chmod 700 "$dir"
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U melanoma --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 ||
    die "initdb failed (see $dir/initdb.log)"
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null ||
    die "PostgreSQL did not start (see $dir/postgres.log)"
  "${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U melanoma melanoma
}
stop_postgres() {
  local dir="$1" bin run=()
  bin="$(pg_bindir)"
  [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
  [ -d "$dir/data" ] && "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
  return 0
}
