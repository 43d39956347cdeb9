"""The web process serves predictions with numpy: torch is never imported."""

import subprocess
import sys

import pytest
from django.conf import settings

CODE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
import django
django.setup()
import config.urls  # noqa
import rewardmodel.api.views, rewardmodel.admin, rewardmodel.tasks  # noqa
import rewardmodel.inference, rewardmodel.services, rewardmodel.selectors  # noqa
from django.urls import resolve
resolve("/api/v1/rewardmodel/predict/")
{extra}
heavy = sorted(m for m in ("torch", "open_clip") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""

PREDICT = """
from django.test import Client
from django.contrib.auth import get_user_model
user = get_user_model().objects.get(username="staff")
client = Client()
client.force_login(user)
r = client.post("/api/v1/rewardmodel/predict/", data={body!r},
                content_type="application/json")
print("STATUS:", r.status_code, r.json()["how"], len(r.json()["scores"]))
"""


def _run(code: str, env: dict | None = None) -> str:
    import os

    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_web_process_does_not_import_torch():
    assert "HEAVY:\n" in _run(CODE.format(extra=""))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_predict_in_a_web_process_never_imports_torch(staff_user, rated_study):
    """A real predict request (trained model, embeddings cached) in a fresh
    process, against the same database: answered, and torch never loaded."""
    from rewardmodel import services

    study, annotators = rated_study
    run = services.training_run_execute(
        run_id=services.training_run_create(study=study).pk
    )
    assert run.status == "succeeded", run.error
    body = {
        "annotator": annotators[0].pk,
        "images": list(study.images.values_list("pk", flat=True)),
    }
    from django.db import connection

    db = settings.DATABASES["default"]
    name = connection.settings_dict["NAME"]
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}"
    out = _run(
        CODE.format(extra=PREDICT.format(body=body)),
        env={"DATABASE_URL": url},
    )
    assert "STATUS: 200 trained 30" in out, out
    assert "HEAVY:\n" in out, out
