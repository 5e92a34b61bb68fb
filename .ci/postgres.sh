#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster for the test suite and prints the URL to export as
# PRMSYNC_TEST_POSTGRES. Usage: `eval "$(bash .ci/postgres.sh start DIR PORT)"`, later
# `bash .ci/postgres.sh stop DIR`. Installs Debian's `postgresql` when initdb is missing; runs the
# server as the non-root `postgres` user (initdb refuses root) on 127.0.0.1 only, fsync off
# (a test cluster: durability is the server's, not under test here); max_connections 1000 for
# the fleet tests and bench (each daemon opens two connections per tenant at start).
set -euo pipefail
cmd="${1:?start|stop}"; dir="${2:?data dir}"; port="${3:-54329}"

bindir() {
  if command -v pg_ctl >/dev/null; then dirname "$(readlink -f "$(command -v pg_ctl)")"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    if [ -z "$(bindir)" ]; then
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
    fi
    bin="$(bindir)"
    if [ "$(id -u)" = 0 ] && ! getent passwd postgres >/dev/null; then
      useradd --system --no-create-home postgres
    fi
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$bin/initdb" -D "$dir/data" -U prmsync --auth=trust -E UTF8 --locale=C.UTF-8 >&2
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c max_connections=1000" \
      start >&2
    echo "export PRMSYNC_TEST_POSTGRES='postgres://prmsync@127.0.0.1:$port/postgres'"
    ;;
  stop)
    bin="$(bindir)"
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    ;;
esac
