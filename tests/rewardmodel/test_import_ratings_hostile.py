"""import_ratings against hostile files: each refused with a message naming the
file, the line and the field; the database and the media folder unchanged
(issue 24, findings 6 and 7)."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from annotation.models import Annotator, Image, Rating
from tests.factories import StudyFactory, png_bytes
from tests.import_snapshot import snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(tmp_path):
    """A folder with three images, and a study on a 1–7 scale."""
    StudyFactory(slug="s", scale_min=1, scale_max=7)
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png_bytes(81_000 + i))
    return folder


def csv_rows(folder, *rows: str, name="r.csv"):
    path = folder / name
    path.write_text("rater,score,image\n" + "\n".join(rows) + "\n")
    return path


GOOD = ["u1,5,0.png", "u2,6,1.png", "u3,2,2.png"]


def refused(path, match: str, *extra) -> str:
    before = snapshot()
    with pytest.raises(CommandError, match=match) as exc:
        call_command("import_ratings", "s", str(path), *extra, stdout=io.StringIO())
    assert "Traceback" not in str(exc.value)
    assert snapshot() == before
    return str(exc.value)


@pytest.mark.parametrize("score", ["nan", "inf", "-inf", "1e400"])
def test_scores_that_are_not_finite(data, score):
    path = csv_rows(data, *GOOD, f"u4,{score},0.png")
    refused(path, r"r\.csv line 5: score (-?inf|nan) is not a finite number")


def test_a_csv_field_over_128_kb(data):
    path = csv_rows(data, *GOOD, f'u4,3,"{"x" * 200_000}"')
    refused(path, r"r\.csv line 5: field larger than field limit")


def test_a_rater_id_with_nul(data):
    """Three good rows first: their images must not stay in media."""
    path = data / "r.jsonl"
    rows = [{"rater": f"u{i}", "score": 3, "image": f"{i}.png"} for i in range(3)]
    rows.append({"rater": "evil\x00", "score": 3, "image": "0.png"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused(path, r"r\.jsonl line 4: rater contains a NUL character")


def test_rater_ids_sharing_their_first_128_characters(data):
    a, b = "x" * 130 + "a", "x" * 130 + "b"
    path = csv_rows(data, *GOOD, f"{a},3,0.png", f"{b},4,1.png")
    refused(path, r"r\.csv line 5: rater is 131 characters long; at most 120")


def test_a_rater_id_too_long_with_the_dataset_name(data):
    path = csv_rows(data, *GOOD, f"{'y' * 110},3,0.png")
    refused(
        path,
        r"r\.csv line 5: rater id is 110 characters; with the dataset name it must",
        "--dataset",
        "d" * 30,
    )


def test_image_paths_outside_the_folder(data, tmp_path):
    other = StudyFactory(slug="other")
    from annotation import services

    stored = services.image_create(study=other, data=png_bytes(99_001))
    elsewhere = stored.file.path  # another study's media
    refused(csv_rows(data, *GOOD, f"u4,3,{elsewhere}"), r"r\.csv line 5: image '")
    refused(csv_rows(data, *GOOD, "u4,3,../../x.png"), r"line 5: image '\.\./")
    (data / "link.png").symlink_to(elsewhere)
    refused(
        csv_rows(data, *GOOD, "u4,3,link.png"), r"line 5: image 'link\.png' is outside"
    )


def test_a_bad_image_after_good_ones_leaves_no_file(data):
    (data / "bad.png").write_bytes(b"not an image")
    path = csv_rows(data, *GOOD, "u4,3,bad.png")
    refused(path, r"r\.csv line 5: .*bad\.png: not a readable image")


def test_a_bad_image_is_skipped_and_listed_when_asked(data):
    """--skip-unreadable-images (always on for PAMELA, issue 26): the image and
    its ratings are left out and named, the rest is imported, and the bad image
    leaves no file."""
    (data / "bad.png").write_bytes(b"not an image")
    path = csv_rows(data, *GOOD, "u4,3,bad.png", "u1,4,bad.png")
    before = set(snapshot()["files"])
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_ratings",
        "s",
        str(path),
        "--skip-unreadable-images",
        stdout=out,
        stderr=err,
    )
    result = json.loads(out.getvalue())
    assert result["ratings_created"] == len(GOOD) == Rating.objects.count()
    assert result["unreadable_images"] == [str((data / "bad.png").resolve())]
    assert result["ratings_skipped_unreadable_image"] == 2
    assert "bad.png" in err.getvalue()
    assert Image.objects.count() == 3
    new_files = set(snapshot()["files"]) - before
    assert sorted(new_files) == sorted(i.file.name for i in Image.objects.all())


def test_invalid_utf8_list_lines_and_fake_parquet(data):
    (data / "r.csv").write_bytes(b"rater,score,image\nu\xff,3,0.png\n")
    refused(data / "r.csv", r"r\.csv .*not UTF-8")
    (data / "r.jsonl").write_text('{"rater": "u", "score": 3, "image": "0.png"}\n[1]\n')
    refused(data / "r.jsonl", r"r\.jsonl line 2: a list, not a JSON object")
    (data / "r.parquet").write_bytes(b"PAR1 nope")
    refused(data / "r.parquet", r"r\.parquet row 1: not a readable Parquet file")


def test_a_rater_excluded_since_gets_no_valid_rating(data):
    path = csv_rows(data, "u1,5,0.png")
    call_command("import_ratings", "s", str(path), stdout=io.StringIO())
    rater = Annotator.objects.get(source="import")
    Annotator.objects.filter(pk=rater.pk).update(status=Annotator.Status.EXCLUDED)
    path = csv_rows(data, "u1,5,0.png", "u1,6,1.png")
    call_command("import_ratings", "s", str(path), stdout=io.StringIO())
    new = Rating.objects.get(annotator=rater, image__sha256=Image.objects.last().sha256)
    assert new.is_valid is False


def test_pamela_images_in_a_parquet_stay_inside(tmp_path):
    StudyFactory(slug="s", scale_min=1, scale_max=7)
    table = pa.Table.from_pylist(
        [{"rater": "u1", "score": 3, "image": {"bytes": None, "path": "/etc/hostname"}}]
    )
    pq.write_table(table, tmp_path / "r.parquet")
    refused(
        tmp_path / "r.parquet", r"r\.parquet row 1: image '/etc/hostname' is outside"
    )


@pytest.mark.parametrize(
    "line,match",
    [
        ("[" * 100_000 + "]" * 100_000, r"r\.jsonl line 2: JSON nested too deeply"),
        ('"just a string"', r"r\.jsonl line 2: a str, not a JSON object"),
        ('{"rater": "u9", "score": 1e400, "image": "0.png"}', r"line 2: score inf"),
        ('{"rater": "u9", "score": NaN, "image": "0.png"}', r"line 2: score nan"),
    ],
)
def test_hostile_jsonl_lines(data, line, match):
    good = json.dumps({"rater": "u1", "score": 3, "image": "0.png"})
    (data / "r.jsonl").write_text(good + "\n" + line + "\n")
    refused(data / "r.jsonl", match)
