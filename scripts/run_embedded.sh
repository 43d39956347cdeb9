#!/usr/bin/env bash
# Web + Celery worker + Celery beat on the embedded default (SQLite, filesystem
# broker). Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
mkdir -p var/log
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$VENV/celery -A config worker -Q default,gpu -c 2 --loglevel INFO >var/log/worker.log 2>&1 &
pids+=($!)
$VENV/celery -A config beat --loglevel INFO -s var/celerybeat-schedule \
  >var/log/beat.log 2>&1 &
pids+=($!)
# The workers' heartbeat file in memory where there is /dev/shm: gunicorn touches
# it on every loop, which should not be a disk write (gunicorn's own advice).
tmp_args=()
[ -d /dev/shm ] && tmp_args=(--worker-tmp-dir /dev/shm)
$VENV/gunicorn config.wsgi -b "$HOST:$PORT" -w 2 "${tmp_args[@]}" --access-logfile - &
pids+=($!)

cat <<MSG

  Palate is running at http://$HOST:$PORT/
    admin:       http://$HOST:$PORT/admin/   (user: admin, password: palate-demo)
    API docs:    http://$HOST:$PORT/api/v1/docs/
    demo invite: see the 'seed_demo' output above
  Worker and beat logs: var/log/worker.log, var/log/beat.log. Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
