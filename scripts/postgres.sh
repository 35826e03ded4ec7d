#!/usr/bin/env bash
# A throwaway PostgreSQL server for the prediction-log tests (and for trying `tunewise serve serve.log=URL`).
#
#   scripts/postgres.sh start [DIR]   installs Debian's postgresql when missing (as root, with apt-get), makes a
#                                     fresh cluster in DIR (default: a new temp folder), starts it on a free
#                                     loopback port and prints its SQLAlchemy URL on stdout:
#                                       postgresql+psycopg://tunewise@127.0.0.1:PORT/tunewise
#   scripts/postgres.sh stop DIR      stops that cluster and deletes DIR
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` system user. Trust
# authentication on 127.0.0.1 only: a test fixture, never a production database.
set -euo pipefail

cmd=${1:-start}
dir=${2:-}

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

as_owner() {  # run a command as the cluster's owner
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    bin=$(find_bin)
    if [ -z "$bin" ]; then
      if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "postgres.sh: PostgreSQL is not installed and apt-get cannot run here (needs root)" >&2
        exit 3
      fi
      echo "postgres.sh: installing postgresql from Debian's packages" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
      bin=$(find_bin)
    fi
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
      echo "postgres.sh: running as root but there is no \`postgres\` user to own the cluster" >&2
      exit 3
    fi
    [ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/tunewise-pg.XXXXXX")
    mkdir -p "$dir"
    chmod 700 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U tunewise -A trust -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U tunewise tunewise
    echo "postgres.sh: cluster in $dir; stop it with: scripts/postgres.sh stop $dir" >&2
    echo "postgresql+psycopg://tunewise@127.0.0.1:$port/tunewise"
    ;;
  stop)
    [ -n "$dir" ] || { echo "usage: scripts/postgres.sh stop DIR" >&2; exit 2; }
    bin=$(find_bin)
    if [ -d "$dir/data" ] && [ -n "$bin" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: scripts/postgres.sh start [DIR] | stop DIR" >&2
    exit 2
    ;;
esac
