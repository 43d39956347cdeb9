"""End to end: the API queues an export, a real ``celery -A config worker``
process on Redis writes it into the same PostgreSQL test database's study, the
client polls the progress and downloads the zip."""

import io
import time
import zipfile

import pyarrow.parquet as pq
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.annotation.export_fixtures import rated_study
from tests.celery_worker import running_worker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def worker(redis_broker, transactional_db, tmp_path, settings):
    settings.PALATE_EXPORT_DIR = tmp_path / "exports"
    env = {"PALATE_EXPORT_DIR": str(settings.PALATE_EXPORT_DIR)}
    with running_worker(
        broker=redis_broker, tmp_path=tmp_path, name="export-e2e", env=env
    ) as (proc, log_path):
        yield proc, log_path


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
