"""Exports over the API and the staff page: staff only, queued for a worker,
polled, downloaded as one deterministic zip; errors are {"detail", "code"}."""

import io
import zipfile

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.datasets.services import export_jobs
from annotation.models import Annotator, Export
from annotation.tasks import export_dataset
from tests.annotation.export_fixtures import rated_study

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _export_dir(settings, tmp_path):
    settings.PALATE_EXPORT_DIR = tmp_path / "exports"


def api(user=None):
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def test_only_staff_may_export_poll_or_download(staff_user):
    study = rated_study()
    annotator = Annotator.objects.first()
    url = f"/api/v1/studies/{study.pk}/exports/"
    export = Export.objects.create(study=study)
    for client in (api(), api(annotator.user)):
        for method, path in (
            ("post", url),
            ("get", url),
            ("get", f"/api/v1/exports/{export.pk}/"),
            ("get", f"/api/v1/exports/{export.pk}/download/"),
        ):
            r = getattr(client, method)(path)
            assert r.status_code in (401, 403), (method, path)
            body = r.json()
            assert set(body) == {"detail", "code"}
            assert body["code"] in ("not_authenticated", "permission_denied")
    assert Export.objects.count() == 1


def test_create_poll_download(staff_user, django_capture_on_commit_callbacks):
    study = rated_study()
    client = api(staff_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = client.post(
            f"/api/v1/studies/{study.pk}/exports/", {"format": "parquet"}, format="json"
        )
    assert r.status_code == 202, r.json()
    body = r.json()
    assert body["status"] == "queued" and body["download_url"] is None
    assert r["Location"] == f"/api/v1/exports/{body['id']}/"
    assert len(callbacks) == 1  # enqueued on commit, not written in the request
    assert not (export_jobs.settings.PALATE_EXPORT_DIR).exists()

    r = client.get(f"/api/v1/exports/{body['id']}/download/")
    assert r.status_code == 404 and r.json()["code"] == "not_found"

    assert export_dataset.run(body["id"]) == "succeeded"  # the task, in process
    polled = client.get(f"/api/v1/exports/{body['id']}/").json()
    assert polled["status"] == "succeeded" and polled["progress"] == 1.0
    assert polled["report"]["ratings"] == 18
    assert polled["download_url"].endswith(f"/api/v1/exports/{body['id']}/download/")
    r = client.get(f"/api/v1/exports/{body['id']}/download/")
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    data = b"".join(r.streaming_content)
    assert len(data) == polled["size_bytes"]
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    slug = study.slug
    assert f"{slug}-parquet/README.md" in names
    assert f"{slug}-parquet/images/data/train-00000-of-00001.parquet" in names
    # Listed under the study.
    listed = client.get(f"/api/v1/studies/{study.pk}/exports/").json()
    assert [e["id"] for e in listed] == [body["id"]]
    # Running the task again changes nothing (idempotent).
    assert export_dataset.run(body["id"]) == "succeeded"


def test_archives_are_byte_identical(staff_user):
    study = rated_study()
    first = export_jobs.export_create(study=study)
    second = export_jobs.export_create(study=study)
    a = export_jobs.export_execute(export_id=first.pk)
    b = export_jobs.export_execute(export_id=second.pk)
    assert (
        export_jobs.export_file(a).read_bytes()
        == export_jobs.export_file(b).read_bytes()
    )


def test_bad_options_are_400_with_code(staff_user):
    study = rated_study()
    client = api(staff_user)
    url = f"/api/v1/studies/{study.pk}/exports/"
    r = client.post(url, {"format": "xlsx"}, format="json")
    assert r.status_code == 400 and r.json()["code"] == "invalid"
    assert "format" in r.json()["detail"]
    r = client.post(url, {"format": "csv", "images": "embed"}, format="json")
    assert r.status_code == 400
    assert "only be embedded in Parquet" in r.json()["detail"]
    assert client.post("/api/v1/studies/999999/exports/").json()["code"] == "not_found"
    assert client.get("/api/v1/exports/999999/").status_code == 404
    assert Export.objects.count() == 0


def test_failed_export_reports_why(staff_user):
    study = rated_study(n_annotators=0)
    export = export_jobs.export_create(study=study)
    done = export_jobs.export_execute(export_id=export.pk)
    assert done.status == "failed" and "has no ratings to export" in done.error
    body = api(staff_user).get(f"/api/v1/exports/{export.pk}/").json()
    assert body["status"] == "failed" and body["download_url"] is None
    root = export_jobs.settings.PALATE_EXPORT_DIR
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


def test_schema_lists_the_export_endpoints(staff_user):
    r = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    paths = (
        r.json()["paths"] if r["Content-Type"].startswith("application/json") else {}
    )
    if not paths:
        import yaml

        paths = yaml.safe_load(r.content)["paths"]
    assert "/api/v1/studies/{study_id}/exports/" in paths
    assert "post" in paths["/api/v1/studies/{study_id}/exports/"]
    assert "/api/v1/exports/{export_id}/" in paths
    assert "/api/v1/exports/{export_id}/download/" in paths


def test_staff_page_starts_and_shows_exports(
    staff_user, django_capture_on_commit_callbacks
):
    study = rated_study()
    web = Client()
    url = f"/staff/studies/{study.pk}/exports/"
    assert web.get(url).status_code == 302  # to the login
    annotator = Annotator.objects.first()
    web.force_login(annotator.user)
    assert web.get(url).status_code == 302
    web.force_login(staff_user)
    page = web.get(url)
    assert page.status_code == 200 and b"Export dataset" in page.content
    with django_capture_on_commit_callbacks(execute=False):
        r = web.post(url, {"format": "csv", "images": "none"})
    assert r.status_code == 302
    export = Export.objects.get()
    assert (export.format, export.images) == ("csv", "none")
    page = web.get(url)
    assert b"Queued" in page.content and b"hx-trigger" in page.content  # polls
    export_jobs.export_execute(export_id=export.pk)
    fragment = web.get(f"/staff/studies/{study.pk}/exports/list")
    assert b"Download" in fragment.content and b"hx-trigger" not in fragment.content
    # htmx bad option: the fragment with the message, nothing created.
    r = web.post(url, {"format": "csv", "images": "embed"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 400 and b"only be embedded" in r.content
    assert Export.objects.count() == 1
