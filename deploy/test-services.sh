# shellcheck shell=bash
# Throwaway PostgreSQL server for the registry tests, on 127.0.0.1 only.
#
#   source deploy/test-services.sh          # install if needed, start or reuse, export the URL
#   bash deploy/test-services.sh start|stop|status
#
# `deploy/quickstart.sh test` sources this file, then execs pytest, which reads
# COADD_TEST_POSTGRES_URL (postgresql+psycopg://coadd_test:...@127.0.0.1:PORT/coadd_test).
# The role may create databases: each test gets its own and drops it.
#
# Because quickstart execs pytest, no exit trap could run after the tests; so the server
# is left running and the next run reuses it (fast). Stop it with
# `bash deploy/test-services.sh stop`. Its data lives in COADD_TEST_PG_DIR (default
# /var/tmp/coadd-test-postgres as root, else $TMPDIR/coadd-test-postgres-UID), tuned for
# speed (fsync off): throwaway data only.
#
# Settings (environment): COADD_TEST_PG_PORT (first port tried, default 54329; the next
# free one up to +20 is used if it is taken), COADD_TEST_PG_DIR.
#
# As root (CI, fresh Debian) a missing PostgreSQL is installed with apt-get, and the
# server runs as the `postgres` user (initdb and postgres refuse to run as root). As
# another user, PostgreSQL must already be installed; the server runs as that user.

_coadd_pg_log() { echo "test-services: $*" >&2; }

_coadd_pg_bindir() {
  local dir best=""
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] || continue
    if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$dir" | sort -V | tail -n 1)" = "$dir" ]; then
      best="$dir"
    fi
  done
  if [ -z "$best" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    best="$(dirname "$(readlink -f "$(command -v initdb)")")"
  fi
  [ -n "$best" ] && echo "$best"
}

_coadd_pg_install() {
  if [ "$(id -u)" != 0 ]; then
    _coadd_pg_log "PostgreSQL is not installed; install it (e.g. sudo apt-get install postgresql) and retry"
    return 1
  fi
  _coadd_pg_log "installing PostgreSQL with apt-get (first run only)"
  apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

# Run a command as the owner of the server: `postgres` when we are root, else ourselves.
_coadd_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_coadd_pg_datadir() {
  if [ -n "${COADD_TEST_PG_DIR:-}" ]; then
    echo "$COADD_TEST_PG_DIR"
  elif [ "$(id -u)" = 0 ]; then
    echo /var/tmp/coadd-test-postgres
  else
    echo "${TMPDIR:-/tmp}/coadd-test-postgres-$(id -u)"
  fi
}

_coadd_pg_port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Port of the server running on $1 (the data directory), from its postmaster.pid.
_coadd_pg_running_port() {
  local datadir="$1"
  [ -f "$datadir/postmaster.pid" ] || return 1
  _coadd_pg_as_owner "$BINDIR_COADD_PG/pg_ctl" -D "$datadir" status >/dev/null 2>&1 || return 1
  sed -n 4p "$datadir/postmaster.pid"
}

_coadd_pg_start() {
  local datadir="$1" major port first
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres || return 1
  fi
  major="$("$BINDIR_COADD_PG/pg_ctl" --version | awk '{print $3}' | cut -d. -f1)"
  if [ -f "$datadir/PG_VERSION" ] && [ "$(cat "$datadir/PG_VERSION")" != "$major" ]; then
    _coadd_pg_log "data directory $datadir is from PostgreSQL $(cat "$datadir/PG_VERSION"), re-creating it for $major"
    _coadd_pg_as_owner "$BINDIR_COADD_PG/pg_ctl" -D "$datadir" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$datadir"
  fi
  if [ ! -f "$datadir/PG_VERSION" ]; then
    rm -rf "$datadir" && mkdir -p "$datadir" || return 1
    if [ "$(id -u)" = 0 ]; then chown postgres: "$datadir" || return 1; fi
    chmod 700 "$datadir"
    _coadd_pg_log "initialising a PostgreSQL $major cluster in $datadir"
    _coadd_pg_as_owner "$BINDIR_COADD_PG/initdb" -D "$datadir" -U postgres -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 >"$datadir.initdb.log" 2>&1 || {
      _coadd_pg_log "initdb failed:"; tail -n 20 "$datadir.initdb.log" >&2; return 1
    }
    cat >>"$datadir/postgresql.conf" <<EOF || return 1
# coadd test server: local only, throwaway data, tuned for speed
listen_addresses = '127.0.0.1'
unix_socket_directories = '$datadir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  if port="$(_coadd_pg_running_port "$datadir")"; then
    return 0
  fi
  first="${COADD_TEST_PG_PORT:-54329}"
  port="$first"
  while _coadd_pg_port_in_use "$port"; do
    port=$((port + 1))
    if [ "$port" -gt $((first + 20)) ]; then
      _coadd_pg_log "no free port in $first..$((first + 20))"; return 1
    fi
  done
  _coadd_pg_log "starting PostgreSQL on 127.0.0.1:$port"
  _coadd_pg_as_owner "$BINDIR_COADD_PG/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 \
    -o "-p $port" start >/dev/null 9>&- || {
    _coadd_pg_log "the server did not start:"; tail -n 20 "$datadir/server.log" >&2; return 1
  }
}

_coadd_pg_psql() {
  local datadir="$1" port="$2"
  shift 2
  local psql="$BINDIR_COADD_PG/psql"
  [ -x "$psql" ] || psql="psql"
  _coadd_pg_as_owner "$psql" -X -q -h "$datadir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -tA "$@"
}

_coadd_pg_ensure_role() {
  local datadir="$1" port="$2"
  if [ "$(_coadd_pg_psql "$datadir" "$port" -c "SELECT 1 FROM pg_roles WHERE rolname = 'coadd_test'")" != 1 ]; then
    _coadd_pg_psql "$datadir" "$port" -c "CREATE ROLE coadd_test LOGIN CREATEDB PASSWORD 'coadd_test'" || return 1
  fi
  if [ "$(_coadd_pg_psql "$datadir" "$port" -c "SELECT 1 FROM pg_database WHERE datname = 'coadd_test'")" != 1 ]; then
    _coadd_pg_psql "$datadir" "$port" -c "CREATE DATABASE coadd_test OWNER coadd_test" || return 1
  fi
}

_coadd_pg_up() {
  local datadir port lock
  BINDIR_COADD_PG="$(_coadd_pg_bindir)" || BINDIR_COADD_PG=""
  if [ -z "$BINDIR_COADD_PG" ]; then
    _coadd_pg_install || { _coadd_pg_log "could not install PostgreSQL"; return 1; }
    BINDIR_COADD_PG="$(_coadd_pg_bindir)" || { _coadd_pg_log "PostgreSQL binaries not found after install"; return 1; }
  fi
  datadir="$(_coadd_pg_datadir)"
  mkdir -p "$(dirname "$datadir")" || return 1
  lock="$datadir.lock"
  # One starter at a time (two test runs may begin together); the server must not
  # inherit the lock's descriptor, or it would hold the lock for its whole life.
  (
    if command -v flock >/dev/null 2>&1; then
      flock -w 120 9 || { _coadd_pg_log "timed out waiting for $lock"; exit 1; }
    fi
    _coadd_pg_start "$datadir" || exit 1
    port="$(_coadd_pg_running_port "$datadir")" || exit 1
    _coadd_pg_ensure_role "$datadir" "$port" || exit 1
  ) 9>"$lock" || return 1
  port="$(_coadd_pg_running_port "$datadir")" || { _coadd_pg_log "server not running"; return 1; }
  export COADD_TEST_POSTGRES_URL="postgresql+psycopg://coadd_test:coadd_test@127.0.0.1:$port/coadd_test"
  _coadd_pg_log "PostgreSQL ready: postgresql+psycopg://coadd_test:***@127.0.0.1:$port/coadd_test"
}

_coadd_pg_down() {
  local datadir
  BINDIR_COADD_PG="$(_coadd_pg_bindir)" || { _coadd_pg_log "PostgreSQL is not installed"; return 0; }
  datadir="$(_coadd_pg_datadir)"
  if _coadd_pg_running_port "$datadir" >/dev/null; then
    _coadd_pg_as_owner "$BINDIR_COADD_PG/pg_ctl" -D "$datadir" -m fast -w stop >/dev/null && _coadd_pg_log "stopped"
  else
    _coadd_pg_log "not running"
  fi
}

_coadd_pg_status() {
  local datadir port
  BINDIR_COADD_PG="$(_coadd_pg_bindir)" || { echo "not installed"; return 1; }
  datadir="$(_coadd_pg_datadir)"
  if port="$(_coadd_pg_running_port "$datadir")"; then
    echo "running on 127.0.0.1:$port (data in $datadir)"
  else
    echo "not running (data in $datadir)"; return 1
  fi
}

_coadd_pg_cleanup() {
  unset -f _coadd_pg_log _coadd_pg_bindir _coadd_pg_install _coadd_pg_as_owner _coadd_pg_datadir \
    _coadd_pg_port_in_use _coadd_pg_running_port _coadd_pg_start _coadd_pg_psql _coadd_pg_ensure_role \
    _coadd_pg_up _coadd_pg_down _coadd_pg_status _coadd_pg_cleanup
  unset BINDIR_COADD_PG
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # Sourced: start or reuse, export the URL; a failure makes `source` return non-zero.
  if _coadd_pg_up; then
    _coadd_pg_cleanup
  else
    _coadd_pg_log "PostgreSQL test server unavailable; PostgreSQL tests will fail"
    _coadd_pg_cleanup
    false
  fi
else
  case "${1:-start}" in
    start) _coadd_pg_up && echo "export COADD_TEST_POSTGRES_URL=$COADD_TEST_POSTGRES_URL" ;;
    stop) _coadd_pg_down ;;
    status) _coadd_pg_status ;;
    *) echo "usage: bash deploy/test-services.sh [start|stop|status]" >&2; exit 2 ;;
  esac
fi
