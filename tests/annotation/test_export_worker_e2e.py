"""End to end: the API queues an export, a real ``celery -A config worker``
process on Redis writes it into the same PostgreSQL test database's study, the
client polls the progress and downloads the zip."""

import io
import os
import signal
import subprocess
import sys
import time
import zipfile

import pyarrow.parquet as pq
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.celery import app as celery_app
from tests.annotation.export_fixtures import rated_study

BROKER = os.environ.get("GENERATION_TEST_BROKER", "redis://127.0.0.1:6379/3")

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return (
        f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    )


def _reset_producers():
    """Forget pooled broker connections and producers. ``app.pool`` is kombu's
    global pool for the URL: closing it alone would leave kombu's global producer
    pool holding a closed pool for the next test on the same broker."""
    from kombu import pools

    pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def worker(transactional_db, tmp_path, settings):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(BROKER)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"Redis is not running at {BROKER}")
    client.flushdb()
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)
    celery_app.conf.broker_url = BROKER
    celery_app.conf.broker_transport_options = {}
    _reset_producers()
    settings.PALATE_EXPORT_DIR = tmp_path / "exports"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": BROKER,
        "DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "PALATE_EXPORT_DIR": str(settings.PALATE_EXPORT_DIR),
        "PALATE_DATA_DIR": str(tmp_path / "worker-data"),
    }
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-c",
            "1",
            "-Q",
            "default",
            "-l",
            "info",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"export-e2e-{os.getpid()}@%h",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(settings.BASE_DIR),
    )
    try:
        yield proc, tmp_path / "worker.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        _reset_producers()
        celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
        client.flushdb()


def test_worker_writes_the_export_the_api_queued(worker, staff_user):
    proc, log = worker
    study = rated_study()
    api = APIClient()
    token, _ = Token.objects.get_or_create(user=staff_user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    r = api.post(f"/api/v1/studies/{study.pk}/exports/", {}, format="json")
    assert r.status_code == 202
    url = r["Location"]
    seen_status = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        body = api.get(url).json()
        seen_status.add(body["status"])
        if body["status"] in ("succeeded", "failed") or proc.poll() is not None:
            break
        time.sleep(0.3)
    assert body["status"] == "succeeded", (body, log.read_text())
    assert body["progress"] == 1.0 and body["report"]["ratings"] == 18
    data = b"".join(api.get(body["download_url"]).streaming_content)
    archive = zipfile.ZipFile(io.BytesIO(data))
    name = f"{study.slug}-parquet/images/data/train-00000-of-00001.parquet"
    table = pq.read_table(io.BytesIO(archive.read(name)))
    assert table.num_rows == 6 and table.column("image")[0]["bytes"].as_py()
