"""A real ``celery -A config worker`` for the end-to-end tests.

``redis_broker`` points this process's Celery app at a flushed Redis database and
forgets pooled producers before and after (kombu keeps a global producer pool per
URL: closing only ``app.pool`` leaves it holding a closed pool, and the next test
that queues a task fails with "Acquire on closed pool"). ``running_worker`` starts
the worker with ``core.processes`` (the same launcher as the benchmarks) against the
test database this process uses.
"""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from core.processes import celery_beat_start, celery_worker_start, process_stop

BROKER = os.environ.get("GENERATION_TEST_BROKER", "redis://127.0.0.1:6379/3")


def worker_database_url() -> str:
    """The URL of the database this test process uses (the test database)."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    host = s["HOST"] or "127.0.0.1"
    return f"postgres://{auth}@{host}:{s['PORT'] or 5432}/{s['NAME']}"


def _forget_producers() -> None:
    from kombu import pools

    pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def redis_broker():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(BROKER)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"Redis is not running at {BROKER}")
    client.flushdb()  # leftovers of an earlier run must not be consumed
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)
    celery_app.conf.broker_url = BROKER
    celery_app.conf.broker_transport_options = {}
    _forget_producers()
    try:
        yield BROKER
    finally:
        _forget_producers()
        celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
        client.flushdb()


def _env(broker: str, tmp_path: Path, env: dict | None) -> dict:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": worker_database_url(),
        "CELERY_BROKER_URL": broker,
        "DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "PALATE_DATA_DIR": str(tmp_path / "worker-data"),
        **(env or {}),
    }


@contextmanager
def running_beat(*, broker: str, tmp_path: Path, env: dict | None = None):
    """Yield ``(process, log_path)`` for ``celery beat`` with the settings'
    schedule (the stale-job sweeps among it), as its own process the way
    production runs it: it outlives a worker that dies."""
    log_path = tmp_path / "beat.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = celery_beat_start(
        env=_env(broker, tmp_path, env), schedule=tmp_path / "beat-schedule", log=log
    )
    try:
        yield proc, log_path
    finally:
        process_stop(proc)
        log.close()


@contextmanager
def running_worker(
    *,
    broker: str,
    tmp_path: Path,
    name: str,
    env: dict | None = None,
    concurrency: int = 1,
):
    """Yield ``(process, log_path)`` for a worker on the ``default`` queue."""
    full_env = _env(broker, tmp_path, env)
    log_path = tmp_path / f"worker-{name}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = celery_worker_start(
        env=full_env,
        name=f"{name}-{os.getpid()}@%h",
        concurrency=concurrency,
        loglevel="info",
        log=log,
    )
    try:
        yield proc, log_path
    finally:
        process_stop(proc)
        log.close()
