"""Browser: a staff user starts an export on the staff page, watches htmx poll
its progress until the download link appears, and downloads the zip; without
JavaScript the same form works as a plain POST."""

import zipfile

import pytest
from django.test import Client

from annotation.datasets.services import export_jobs
from annotation.models import Export
from tests.annotation.export_fixtures import rated_study

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def queued(settings, tmp_path, monkeypatch):
    """The test plays the worker: record what would go to the broker."""
    from annotation import tasks

    settings.PALATE_EXPORT_DIR = tmp_path / "exports"
    sent = []
    monkeypatch.setattr(tasks.export_dataset, "delay", sent.append)
    return sent


def staff_page(new_page, live_server, user, **kwargs):
    client = Client()
    client.force_login(user)
    page = new_page(accept_downloads=True, **kwargs)
    page.context.add_cookies(
        [
            {
                "name": "sessionid",
                "value": client.cookies["sessionid"].value,
                "url": live_server.url,
            }
        ]
    )
    return page


def test_start_watch_and_download_an_export(
    live_server, new_page, staff_user, tmp_path, queued
):
    study = rated_study()
    page = staff_page(new_page, live_server, staff_user)
    page.goto(f"{live_server.url}/staff/studies/{study.pk}/exports/")
    assert page.locator("h1").inner_text() == f"Dataset exports: {study.name}"
    page.select_option("select[name=format]", "parquet")
    page.click("form.exp-new button[type=submit]")
    row = page.locator("#export-list tbody tr").first
    row.get_by_text("Queued").wait_for()  # swapped in by htmx, no reload
    export = Export.objects.get()
    assert export.status == "queued" and export.created_by == staff_user
    assert queued == [export.pk]  # handed to a worker once committed
    export_jobs.export_execute(export_id=export.pk)  # what the worker does
    link = page.get_by_role("link", name="Download")
    link.wait_for(timeout=20_000)  # the list polls itself every 2 s
    assert "18 ratings, 6 images, 3 annotators" in row.inner_text()
    with page.expect_download() as info:
        link.click()
    path = tmp_path / "download.zip"
    info.value.save_as(path)
    names = zipfile.ZipFile(path).namelist()
    assert f"{study.slug}-parquet/README.md" in names
    # Finished: the list stops polling.
    assert page.locator("#export-list[hx-trigger]").count() == 0


def test_form_works_without_javascript(live_server, new_page, staff_user):
    study = rated_study()
    page = staff_page(new_page, live_server, staff_user, java_script_enabled=False)
    page.goto(f"{live_server.url}/staff/studies/{study.pk}/exports/")
    page.select_option("select[name=format]", "csv")
    page.select_option("select[name=images]", "embed")
    page.click("form.exp-new button[type=submit]")
    assert "only be embedded in Parquet" in page.locator(".staff-messages").inner_text()
    assert Export.objects.count() == 0
    page.select_option("select[name=format]", "jsonl")
    page.select_option("select[name=images]", "none")
    page.click("form.exp-new button[type=submit]")
    assert "queued" in page.locator(".staff-messages").inner_text()
    export = Export.objects.get()
    assert (export.format, export.images) == ("jsonl", "none")
