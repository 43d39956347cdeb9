"""import_dataset against hostile files: each case is refused with a message
naming the file, the line (or row) and the field, and leaves the database and
the media folder exactly as they were (issue 24, findings 5 and 7)."""

import json
import os
import re
import signal
import zipfile
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from annotation import services
from annotation.datasets.services.export import ExportOptions, dataset_export
from annotation.datasets.services.media_journal import (
    media_journal,
    media_orphans_sweep,
)
from annotation.models import Image
from tests.annotation.export_fixtures import rated_study
from tests.import_snapshot import snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def export(tmp_path):
    """A JSONL export (images as files) of a rated study, and an empty study."""
    original = rated_study()
    root = tmp_path / "export"
    dataset_export(
        study=original, out=root, options=ExportOptions(fmt="jsonl", images="path")
    )
    services.study_create(
        name="Target",
        slug="target",
        raters_per_image=original.raters_per_image,
        demographics_fields=original.demographics_fields,
        scale_min=original.scale_min,
        scale_max=original.scale_max,
    )
    return root


def table(root: Path, config: str) -> Path:
    return sorted((root / config / "data").glob("*.jsonl"))[0]


def edit_first(root: Path, config: str, **changes) -> None:
    path = table(root, config)
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    row.update(changes)
    lines[0] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


def replace_line(root: Path, config: str, raw: bytes) -> None:
    path = table(root, config)
    lines = path.read_bytes().splitlines()
    lines[1] = raw
    path.write_bytes(b"\n".join(lines) + b"\n")


def refused(path, match: str) -> str:
    before = snapshot()
    with pytest.raises(CommandError, match=match) as exc:
        call_command("import_dataset", "target", str(path))
    assert "Traceback" not in str(exc.value)
    assert snapshot() == before
    return str(exc.value)


def deep(n: int) -> str:
    return "[" * n + "]" * n


CASES = {
    "nul in annotator id": (
        lambda r: edit_first(r, "annotators", annotator_id="a-\x00x"),
        r"annotators/data/train-00000-of-00001\.jsonl line 1: annotator_id "
        "contains a NUL",
    ),
    "nul in rating's annotator id": (
        lambda r: edit_first(r, "ratings", annotator_id="a-\x00x"),
        r"ratings/data/{ratings} line 1: annotator_id contains a NUL",
    ),
    "nul in prompt": (
        lambda r: edit_first(r, "images", prompt="a\x00b"),
        r"images/data/train-00000-of-00001\.jsonl line 1: prompt contains a NUL",
    ),
    "naive timestamp": (
        lambda r: edit_first(r, "ratings", created_at="2026-01-01T10:00:00"),
        r"ratings/.*line 1: created_at 2026-01-01T10:00:00 has no time zone",
    ),
    "time on item 2^40": (
        lambda r: edit_first(r, "ratings", time_on_item_ms=2**40),
        r"ratings/.*line 1: time_on_item_ms 1\.09951e\+12 is outside 0–86400000",
    ),
    "time on item -5": (
        lambda r: edit_first(r, "ratings", time_on_item_ms=-5),
        r"ratings/.*line 1: time_on_item_ms -5 is outside",
    ),
    "score nan": (
        lambda r: edit_first(r, "ratings", score=float("nan")),
        r"ratings/.*line 1: score nan is not a finite number",
    ),
    "score 1e400": (
        lambda r: edit_first(r, "ratings", score="1e400"),
        r"ratings/.*line 1: score '1e400' is not a finite number",
    ),
    "line is a list": (
        lambda r: replace_line(r, "ratings", b"[1, 2, 3]"),
        r"ratings/data/{ratings} line 2: a list, not a JSON object",
    ),
    "line is a string": (
        lambda r: replace_line(r, "annotators", b'"hello"'),
        r"annotators/.*line 2: a str, not a JSON object",
    ),
    "invalid utf-8": (
        lambda r: replace_line(r, "images", b'{"image_id": "\xff\xfe"}'),
        r"images/.*line 2: not UTF-8",
    ),
    "provenance nested 100,000 deep": (
        lambda r: edit_first(r, "images", provenance=deep(100_000)),
        r"images/.*line 1: provenance is 200000 characters of JSON; at most 65536",
    ),
    "provenance nested 5,000 deep": (
        lambda r: edit_first(r, "images", provenance=deep(5_000)),
        r"images/.*line 1: provenance is not valid JSON",
    ),
    "provenance nested 50 deep": (
        lambda r: edit_first(r, "images", provenance='{"a":' + deep(50) + "}"),
        r"images/.*line 1: provenance is nested more than 20 levels",
    ),
    "row nested 100,000 deep": (
        lambda r: replace_line(r, "images", deep(100_000).encode()),
        r"images/.*line 2: JSON nested too deeply",
    ),
    "image path outside the export": (
        lambda r: edit_first(r, "images", image={"path": "../../etc/passwd"}),
        r"images/.*line 1: image '\.\./\.\./etc/passwd' is outside",
    ),
    "image path absolute": (
        lambda r: edit_first(r, "images", image={"path": "/etc/hostname"}),
        r"images/.*line 1: image '/etc/hostname' is outside",
    ),
    "score a string": (
        lambda r: edit_first(r, "ratings", score="many"),
        r"ratings/.*line 1: score 'many' is not a number",
    ),
    "is_valid not a boolean": (
        lambda r: edit_first(r, "ratings", is_valid="perhaps"),
        r"ratings/.*line 1: is_valid 'perhaps' is not true or false",
    ),
    "id over the length cap": (
        lambda r: edit_first(r, "annotators", annotator_id="a" * 33),
        r"annotators/.*line 1: annotator_id is 33 characters long; at most 32",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_export_is_refused_and_changes_nothing(export, case):
    damage, match = CASES[case]
    # The first ratings file is whichever split sorts first in this export (the
    # splits hash from the data: issue 26).
    first = re.escape(table(export, "ratings").name)
    damage(export)
    refused(export, match.replace("{ratings}", first))


def test_symlink_out_of_the_export_is_refused(export, tmp_path):
    secret = tmp_path / "elsewhere.png"
    image = sorted((export / "images" / "files").rglob("*.png"))[0]
    secret.write_bytes(image.read_bytes())
    image.unlink()
    image.symlink_to(secret)
    refused(export, r"images/.*line \d+: image '.*' is outside")


def test_a_parquet_file_that_is_not_parquet(export):
    for path in (export / "ratings" / "data").glob("*.jsonl"):
        path.unlink()
    (export / "ratings" / "data" / "train-00000-of-00001.parquet").write_text("hi")
    for config in ("images", "annotators"):
        for path in (export / config / "data").glob("*.jsonl"):
            path.with_suffix(".parquet").write_bytes(b"PAR1 not really")
    refused(export, r"images/data/train-00000-of-00001\.parquet row 1: not a readable")


def test_a_huge_zip_member_is_refused_without_being_extracted(export, tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(export.rglob("*")):
            if path.is_file():
                zf.write(path, f"export/{path.relative_to(export)}")
        with zf.open("export/images/files/huge.png", "w", force_zip64=True) as fh:
            for _ in range(200):
                fh.write(bytes(2**20))  # 200 MiB of zeros, a few kB compressed
    assert archive.stat().st_size < 2 * 2**20
    message = refused(archive, r"member 'export/images/files/huge\.png' is over")
    assert "52428800-byte limit" in message


def test_zip_member_names_outside_the_archive_are_refused(tmp_path, export):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.txt", "x")
    refused(archive, r"member '\.\./outside\.txt': the name points outside")
    assert not (tmp_path / "outside.txt").exists()


def test_a_rater_mapped_to_an_unknown_person_is_refused(export):
    rater = json.loads(table(export, "annotators").read_text().splitlines()[0])
    before = snapshot()
    with pytest.raises(CommandError, match="no annotator 'a-nobody'"):
        call_command(
            "import_dataset",
            "target",
            str(export),
            "--map-annotator",
            f"{rater['annotator_id']}=a-nobody",
        )
    assert snapshot() == before


def test_a_killed_import_leaves_no_file_once_swept(settings):
    """A process that dies between writing an image file and committing its row
    (SIGKILL: no cleanup runs) leaves a journal; the next import's sweep deletes
    the file, and keeps files whose rows exist."""
    study = rated_study()
    kept = Image.objects.filter(study=study).first().file.name
    orphan = "images/999/ab/abcdef.png"
    pid = os.fork()
    if pid == 0:  # the import that dies (touches no database)
        with media_journal() as journal:
            journal.add(orphan)
            journal.add(kept)
            default_storage.save(orphan, ContentFile(b"half an import"))
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert default_storage.exists(orphan)
    assert media_orphans_sweep() == 1
    assert not default_storage.exists(orphan) and default_storage.exists(kept)
    assert not list((Path(settings.MEDIA_ROOT) / ".import-journal").glob("*.log"))


def test_a_live_import_journal_is_not_swept():
    with media_journal() as journal:
        journal.add("images/1/aa/live.png")
        default_storage.save("images/1/aa/live.png", ContentFile(b"in flight"))
        assert media_orphans_sweep() == 0
        assert default_storage.exists("images/1/aa/live.png")
        default_storage.delete("images/1/aa/live.png")
