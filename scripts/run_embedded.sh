#!/usr/bin/env bash
# Web (uWSGI) + Celery worker + Celery beat on the embedded default (SQLite, filesystem
# broker). Ctrl-C, or SIGTERM to this script or its process group (what
# `timeout`, systemd and container runtimes send), stops all three within 10 s:
# each runs in its own process group, gets TERM, and whatever is left of a group
# after STOP_GRACE seconds gets KILL. The worker's TERM is a cold shutdown after
# a soft shutdown of 5 s (REMAP_SIGTERM, CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT):
# a task still running is stopped and its message requeued (late
# acknowledgement); a long job is taken over or failed by the heartbeat sweep
# (docs/architecture.md, "Workers that die").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
VAR=${PALATE_VAR_DIR:-var}
STOP_GRACE=${STOP_GRACE:-7}
WEB_SERVER=${WEB_SERVER:-uwsgi}
case "$WEB_SERVER" in
  uwsgi | gunicorn) ;;
  *) echo "WEB_SERVER must be uwsgi (the default) or gunicorn" >&2; exit 2 ;;
esac
mkdir -p "$VAR/log"
pids=()

stop() {
  # A second Ctrl-C or TERM must not cut the stop short and leave processes.
  trap '' INT TERM
  trap - EXIT
  local pid alive _
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq $((STOP_GRACE * 10))); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 143' TERM
trap 'stop; exit 130' INT
trap stop EXIT

REMAP_SIGTERM=SIGQUIT CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT=5 \
  setsid $VENV/celery -A config worker -Q default,gpu -c 2 --loglevel INFO \
  >"$VAR/log/worker.log" 2>&1 &
pids+=($!)
setsid $VENV/celery -A config beat --loglevel INFO -s "$VAR/celerybeat-schedule" \
  >"$VAR/log/beat.log" 2>&1 &
pids+=($!)
# The web server: uWSGI with config/uwsgi.ini (graceful TERM and HUP, worker
# recycling, harakiri timeout, access log on stderr); WEB_SERVER=gunicorn starts
# the fallback instead, its heartbeat file in memory where there is /dev/shm
# (gunicorn touches it on every loop, which should not be a disk write).
case "$WEB_SERVER" in
  uwsgi)
    setsid $VENV/uwsgi --ini config/uwsgi.ini --http11-socket "$HOST:$PORT" \
      --processes 2 --worker-reload-mercy 5 &
    ;;
  gunicorn)
    tmp_args=()
    [ -d /dev/shm ] && tmp_args=(--worker-tmp-dir /dev/shm)
    setsid $VENV/gunicorn config.wsgi -b "$HOST:$PORT" -w 2 --graceful-timeout 5 \
      "${tmp_args[@]}" --access-logfile - &
    ;;
esac
pids+=($!)

cat <<MSG

  Palate is running at http://$HOST:$PORT/
    admin:       http://$HOST:$PORT/admin/   (user: admin, password: palate-demo)
    API docs:    http://$HOST:$PORT/api/v1/docs/
    demo invite: see the 'seed_demo' output above
  Worker and beat logs: $VAR/log/worker.log, $VAR/log/beat.log.
  Ctrl-C (or SIGTERM) stops everything within 10 s.

MSG
wait -n "${pids[@]}"
