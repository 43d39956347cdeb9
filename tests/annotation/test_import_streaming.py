"""``dataset_import`` keeps memory flat (issue 29): the ratings are checked as
they stream past, then read again and written in batches of ``BATCH``; no list
of every rating is ever held, and embedded image bytes are not read while
checking."""

import pytest

from annotation import services
from annotation.datasets.services import import_batches, import_input
from annotation.datasets.services import import_export_file as importer
from annotation.datasets.services.export import ExportOptions, dataset_export
from annotation.models import Rating, Study
from tests.annotation.export_fixtures import rated_study

pytestmark = pytest.mark.django_db


def _spy_rows(monkeypatch):
    """Count the rows the importer reads from each table, in order (the real
    reader underneath)."""
    log: list[tuple[str, str]] = []
    real = import_input.table_rows

    def table_rows(path, *, label, columns=None):
        for where, row in real(path, label=label, columns=columns):
            log.append((label.split("/")[0], "image" in row))
            yield where, row

    monkeypatch.setattr(import_input, "table_rows", table_rows)
    return log


def test_ratings_are_written_in_batches_while_the_file_is_read(tmp_path, monkeypatch):
    original = rated_study(n_images=8, n_annotators=5, raters=4)
    dataset_export(
        study=original,
        out=tmp_path / "x",
        options=ExportOptions(fmt="parquet", images="embed"),
    )
    total = Rating.objects.filter(study=original).count()  # 32
    copy = services.study_create(
        name="Copy", slug="copy", raters_per_image=4, status=Study.Status.OPEN
    )
    monkeypatch.setattr(import_batches, "BATCH", 5)
    log = _spy_rows(monkeypatch)
    seen_at_write: list[tuple[int, int]] = []

    def progress(stage, done, _total):
        if stage == "ratings":
            read = sum(1 for table, _ in log if table == "ratings")
            # (ratings written, rows of the second pass read); done counts images
            seen_at_write.append((done - 8, read - total))

    report = importer.dataset_import(
        study=copy, root=tmp_path / "x", on_progress=progress
    )
    assert report["ratings"] == total == Rating.objects.filter(study=copy).count()
    # Each batch was written after reading at most that many rows (+1 look-ahead)
    # of the second pass, not the whole table.
    assert [d for d, _ in seen_at_write] == [5, 10, 15, 20, 25, 30, 32]
    assert all(read <= done + 1 for done, read in seen_at_write)
    # The checking pass read the images table without the image bytes; the
    # bytes were read once, for writing.
    images = [has_bytes for table, has_bytes in log if table == "images"]
    assert images == [False] * 8 + [True] * 8
    # The plan holds counts, not rows.
    empty = services.study_create(
        name="Empty", slug="empty", raters_per_image=4, status=Study.Status.OPEN
    )
    plan = importer.dataset_plan(study=empty, root=tmp_path / "x")
    assert isinstance(plan.ratings, int) and plan.ratings == total
