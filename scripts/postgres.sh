#!/usr/bin/env bash
# Starts a throw-away PostgreSQL 15 for tests and benchmarks, and prints its DATABASE_URL on stdout.
#
#   scripts/postgres.sh            # install if needed, initdb, start, print URL
#   PG_PORT=55000 scripts/postgres.sh
#   scripts/postgres.sh stop
#
# Idempotent: when the server is already running it only prints the URL. Everything lives under the
# git-ignored .data/pg. Log lines go to stderr so that `url=$(scripts/postgres.sh)` captures the URL only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PG_PORT:-54329}"
BASE="${PG_DATA_DIR:-$ROOT/.data/pg}"
DATA="$BASE/data"
SOCK="$BASE/run"
LOG="$BASE/postgres.log"
TEST_USER="${PG_TEST_USER:-tuc_test}"
TEST_PASSWORD="${PG_TEST_PASSWORD:-tuc_test}"
URL="postgres://${TEST_USER}:${TEST_PASSWORD}@127.0.0.1:${PORT}/postgres"

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [[ -x "$dir/pg_ctl" ]]; then echo "$dir"; return 0; fi
  done
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0; fi
  return 1
}

# Run as the unprivileged postgres user when we are root (initdb refuses to run as root).
as_pg() {
  if [[ "$(id -u)" == "0" ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

BINDIR="$(find_bindir || true)"
if [[ -z "$BINDIR" ]]; then
  log "pg_ctl not found: installing Debian's postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends postgresql >&2
  BINDIR="$(find_bindir)"
fi

if [[ "${1:-}" == "stop" ]]; then
  if [[ -f "$DATA/postmaster.pid" ]]; then as_pg "$BINDIR/pg_ctl" -D "$DATA" -m fast stop >&2; fi
  exit 0
fi

mkdir -p "$BASE" "$SOCK"
if [[ "$(id -u)" == "0" ]]; then chown -R postgres:postgres "$BASE"; fi

# Test workers may call this at the same moment: one initdb/start at a time.
exec 9>"$BASE/.lock"
flock 9

if [[ ! -f "$DATA/PG_VERSION" ]]; then
  log "initdb into $DATA"
  as_pg "$BINDIR/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >&2 2>&1 || as_pg "$BINDIR/initdb" -D "$DATA" -U postgres \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >&2
fi

if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting on 127.0.0.1:$PORT"
  # `9>&-`: the server must not inherit the lock's descriptor, or it would hold the lock for its whole
  # life and every later run of this script (one per test worker) would wait on it forever.
  # fsync off: this cluster is disposable test data; it makes the bench load and CREATE DATABASE fast.
  as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $SOCK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >&2 9>&-
fi

# The test login: a superuser so that tests can create databases and roles and switch to the app role.
as_pg "$BINDIR/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt >&2 <<SQL
SELECT 'CREATE ROLE ${TEST_USER} LOGIN SUPERUSER PASSWORD ''${TEST_PASSWORD}'''
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${TEST_USER}')
\gexec
SQL

echo "$URL"
