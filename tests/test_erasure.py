"""Issue 24, 8 and 9: after erasure nothing identifies the person, anywhere.

A person with a username, a Prolific id, a unique demographic value, login
records (IP, user agent), an admin log entry, a session, quality statistics, a
trained model with their metrics, held-out predictions and head, a steering run,
and an export archive holding their id and demographics. After the API erasure:
a full ``pg_dump`` of the database, every file in the media folder and every
export file (archives opened, Parquet decoded) hold none of their identifiers;
the APIs and pages that listed them do not; the study's counts are right."""

import io
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from annotation import services as ann
from annotation.datasets.services.export_jobs import export_create, export_execute
from annotation.models import Annotator, AnnotatorQuality, Export
from rewardmodel import services as rm
from rewardmodel.checkpoint import checkpoint_load
from rewardmodel.models import AnnotatorMetric, HeldOutPredictions
from steering.models import Optimization
from tests.rewardmodel.conftest import TINY, make_study, rate_study

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

IP, AGENT = "203.0.113.77", "Mozilla/5.0 ZorkBrowser/9.1"


@pytest.fixture
def world(transactional_db, settings, tmp_path, staff_user):
    settings.REWARDMODEL_DIR = str(tmp_path / "rm")
    settings.REWARDMODEL_BACKBONE = TINY
    settings.PALATE_EXPORT_DIR = tmp_path / "exports"
    study, annotators = make_study(
        n_images=16,
        n_annotators=5,
        raters=4,
        demographics=lambda i: {"country": "Zembla-83" if i == 0 else "DE"},
    )
    study.demographics_fields = ["country"]
    study.save(update_fields=["demographics_fields"])
    person = annotators[0]
    Annotator.objects.filter(pk=person.pk).update(
        source="prolific", external_id="PIDZQ5550101"
    )
    person.user.username = "zq-target-person"
    person.user.save(update_fields=["username"])
    rate_study(study, annotators)
    run = rm.training_run_execute(run_id=rm.training_run_create(study=study).pk)
    assert run.status == "succeeded", run.error
    person.refresh_from_db()
    _traces(person, staff_user)
    export = export_execute(
        export_id=export_create(study=study, fmt="parquet", images="none").pk
    )
    assert export.status == "succeeded", export.error
    ids = {
        "username": "zq-target-person",
        "external id": "PIDZQ5550101",
        "public id": person.public_id,
        "demographic": "Zembla-83",
        "ip": IP,
        "user agent": AGENT,
    }
    return study, person, run.version, export, ids


def _traces(person, staff_user):
    """Login records, an admin log entry, a session and a steering run."""
    failed = Client(REMOTE_ADDR=IP, HTTP_USER_AGENT=AGENT).post(
        "/admin/login/", {"username": person.user.username, "password": "wrong"}
    )
    assert failed.status_code == 200
    assert AccessAttempt.objects.filter(username=person.user.username).exists()
    # The two other logs, as axes writes them when they are switched on.
    for model in (AccessLog, AccessFailureLog):
        model.objects.create(
            username=person.user.username,
            ip_address=IP,
            user_agent=AGENT,
            http_accept="text/html",
            path_info="/admin/login/",
        )
    LogEntry.objects.log_action(
        user_id=staff_user.pk,
        content_type_id=ContentType.objects.get_for_model(Annotator).pk,
        object_id=person.pk,
        object_repr=str(person),
        action_flag=CHANGE,
        change_message=f"paused {person.public_id}",
    )
    Client().force_login(person.user)
    Optimization.objects.create(
        study=person.participations.first().study,
        annotator=person,
        base_prompt="a fox",
        proposer="attribute",
        backend="procedural",
        rounds=1,
        per_round=1,
        max_images=1,
    )


def _database_dump() -> str:
    s = connection.settings_dict
    return subprocess.run(
        [
            "pg_dump",
            "--data-only",
            "-h",
            s["HOST"] or "127.0.0.1",
            "-p",
            str(s["PORT"] or 5432),
            "-U",
            s["USER"],
            s["NAME"],
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _file_texts(root: Path):
    """(path, text) for every file under ``root``; zip members and Parquet
    tables decoded (their strings are compressed inside)."""
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield str(path), data.decode("latin-1")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    member = zf.read(name)
                    if name.endswith(".parquet"):
                        member = str(pq.read_table(io.BytesIO(member)).to_pylist())
                        yield f"{path}:{name}", member
                    else:
                        yield f"{path}:{name}", member.decode("latin-1")


def _found(ids: dict, settings) -> list[str]:
    places = [("database dump", _database_dump())]
    places += list(_file_texts(settings.MEDIA_ROOT))
    places += list(_file_texts(settings.PALATE_EXPORT_DIR))
    return [
        f"{what} ({value}) in {where}"
        for where, text in places
        for what, value in ids.items()
        if value in text
    ]


def test_erasure_leaves_no_identifier_anywhere(world, staff_user, settings):
    study, person, version, export, ids = world
    found = _found(ids, settings)
    # The search sees the person before erasure: in the dump and in the archive.
    assert any("database dump" in f for f in found)
    assert any(".zip:" in f and "public id" in f for f in found)
    assert any(".zip:" in f and "demographic" in f for f in found)
    before, keys, _ = checkpoint_load(version.checkpoint_path)
    assert str(person.pk) in keys
    # Trained with the default config: the similar crowd's low-rank prior, whose
    # factors have one row per head and must lose the person's row with it.
    assert before.similar.u.shape[0] == len(keys)

    api = APIClient()
    api.force_authenticate(staff_user)
    url = f"/api/v1/annotators/{person.public_id}/erase/"
    wrong = api.post(url, {"confirm": "a-000000000000"}, format="json")
    assert wrong.status_code == 400 and "does not match" in wrong.json()["detail"]
    assert api.post(url, ["x"], format="json").status_code == 400
    assert Annotator.objects.get(pk=person.pk).erased_at is None  # nothing done
    r = api.post(url, {"confirm": person.public_id}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["public_id"] != person.public_id

    assert _found(ids, settings) == []
    # Derived from their ratings alone: gone.
    assert not AnnotatorMetric.objects.filter(annotator=person).exists()
    assert not HeldOutPredictions.objects.filter(annotator=person).exists()
    assert not AnnotatorQuality.objects.filter(annotator=person).exists()
    assert not Optimization.objects.filter(annotator=person).exists()
    version.refresh_from_db()
    after, kept, _ = checkpoint_load(version.checkpoint_path)
    assert str(person.pk) not in kept
    i = keys.index(str(person.pk))
    assert np.array_equal(after.similar.u, np.delete(before.similar.u, i, axis=0))
    other = Annotator.objects.exclude(pk=person.pk).filter(ratings__study=study)[0]
    still = api.post(  # the rewritten checkpoint loads and serves the others
        "/api/v1/rewardmodel/predict/",
        {"annotator": other.pk, "images": [study.images.first().pk]},
        format="json",
    )
    assert still.status_code == 200, still.content
    # The archive made before is withdrawn with a reason: 410, not the file.
    gone = api.get(f"/api/v1/exports/{export.pk}/download/")
    assert gone.status_code == 410 and "erased" in gone.json()["detail"]
    assert api.get(f"/api/v1/exports/{export.pk}/").json()["download_url"] is None
    # APIs and pages that listed them do not.
    predict = api.post(
        "/api/v1/rewardmodel/predict/",
        {"annotator": person.pk, "images": [study.images.first().pk]},
        format="json",
    )
    assert predict.status_code == 404
    rows = api.get(f"/api/v1/rewardmodel/versions/{version.pk}/annotators/").json()
    assert person.pk not in [row.get("annotator") for row in rows["results"]]
    quality = api.get(f"/api/v1/studies/{study.pk}/quality/annotators/").json()
    assert person.pk not in [row["annotator"] for row in quality["results"]]
    web = Client()
    web.force_login(staff_user)
    page = web.get("/steering/").content.decode()
    assert f'value="{study.pk}:{other.pk}"' in page
    assert f'value="{study.pk}:{person.pk}"' not in page
    # Counts stay right; a new export works and leaves the person out.
    assert ann.integrity_check().ok
    again = export_execute(
        export_id=export_create(study=study, fmt="parquet", images="none").pk
    )
    assert again.status == "succeeded"
    assert Export.objects.get(pk=export.pk).withdrawn_at is not None
    assert _found(ids, settings) == []
