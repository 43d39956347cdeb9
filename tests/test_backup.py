"""scripts/backup.sh then scripts/restore.sh into a fresh database and media
folder: every rating comes back, counters agree with rows, every image file is
there with its bytes intact."""

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings
from django.db import connection

from annotation import services
from annotation.models import Image, Rating
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

ROOT = Path(__file__).resolve().parent.parent


def db_url(name: str) -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name}"


def script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", f"scripts/{name}", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def fresh_database():
    name = f"palate_restore_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # pg_dump must see committed rows
def test_backup_restores_every_rating_and_image(tmp_path, fresh_database):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=10)
    make_images(study, 8)
    annotators = [join(AnnotatorFactory(), study) for _ in range(6)]
    for a in annotators:
        for _ in range(4):
            (lease,) = services.assignment_claim(annotator=a, study=study)
            services.rating_submit(assignment_id=lease.pk, annotator=a, score=5)
    services.assignment_claim(annotator=annotators[0], study=study)  # a live lease
    services.annotator_set_status(annotator=annotators[1], status="excluded")
    ratings = list(
        Rating.objects.order_by("pk").values_list(
            "pk", "image_id", "annotator_id", "score", "is_valid", "time_on_item_ms"
        )
    )
    images = {
        i.pk: (i.file.name, i.sha256, i.rating_count, i.lease_count)
        for i in Image.objects.all()
    }
    assert len(ratings) == 24 and sum(not r[4] for r in ratings) == 4

    made = script(
        "backup.sh",
        str(tmp_path / "backups"),
        DATABASE_URL=db_url(connection.settings_dict["NAME"]),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
    )
    assert made.returncode == 0, made.stderr
    backup = Path(made.stdout.strip().splitlines()[-1])
    assert {p.name for p in backup.iterdir()} == {
        "db.dump",
        "media.tar.gz",
        "SHA256SUMS",
    }

    restored_media = tmp_path / "restored-media"
    target = db_url(fresh_database)
    done = script(
        "restore.sh", str(backup), DATABASE_URL=target, MEDIA_ROOT=str(restored_media)
    )
    assert done.returncode == 0, done.stderr
    assert "restored: 24 ratings, 8 images" in done.stdout

    with psycopg2.connect(target) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, image_id, annotator_id, score, is_valid, time_on_item_ms "
            "FROM annotation_rating ORDER BY id"
        )
        assert cur.fetchall() == ratings
        cur.execute(
            "SELECT id, file, sha256, rating_count, lease_count FROM annotation_image"
        )
        assert {row[0]: row[1:] for row in cur.fetchall()} == images
    conn.close()
    for name, sha, *_ in images.values():
        data = (restored_media / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
    # The restored copy passes the same invariant check as the live one.
    check = subprocess.run(
        [".venv/bin/python", "manage.py", "check_integrity"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": target,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and "no drift" in check.stdout, check.stderr

    # A second restore into the now-filled database is refused, changing nothing.
    again = script(
        "restore.sh",
        str(backup),
        DATABASE_URL=target,
        MEDIA_ROOT=str(tmp_path / "other"),
    )
    assert again.returncode == 2 and "fresh one" in again.stderr


@pytest.mark.postgres
def test_damaged_backup_is_refused(tmp_path):
    backup = tmp_path / "palate-x"
    backup.mkdir()
    (backup / "db.dump").write_bytes(b"dump")
    (backup / "media.tar.gz").write_bytes(b"media")
    subprocess.run(
        "sha256sum db.dump media.tar.gz > SHA256SUMS",
        shell=True,
        cwd=backup,
        check=True,
    )
    (backup / "db.dump").write_bytes(b"dumq")
    r = script(
        "restore.sh",
        str(backup),
        DATABASE_URL=db_url("postgres"),
        MEDIA_ROOT=str(tmp_path / "m"),
    )
    assert r.returncode == 2 and "damaged" in r.stderr
