"""Round trip: a Palate export imports into a new study with identical ratings,
images (byte-equal), annotators and splits, in every format; bad input changes
nothing."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from annotation import services
from annotation.datasets.services.export import ExportOptions, dataset_export
from annotation.datasets.services.import_export_file import dataset_import
from annotation.models import Annotator, Assignment, Image, Rating, Study
from core.exceptions import InvalidInput
from tests.annotation.export_fixtures import rated_study

pytestmark = pytest.mark.django_db


def stored_files(media: Path) -> list[Path]:
    return sorted(p for p in media.rglob("*") if p.is_file())


def new_study(like: Study, slug: str = "copy") -> Study:
    return services.study_create(
        name="Imported copy",
        slug=slug,
        raters_per_image=like.raters_per_image,
        demographics_fields=like.demographics_fields,
        scale_min=like.scale_min,
        scale_max=like.scale_max,
    )


def load(root: Path, config: str) -> list[dict]:
    rows = []
    for path in sorted((root / config / "data").glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def comparable(root: Path) -> dict:
    """The three tables keyed by content (sha256, pseudonymous id), not by the
    database ids that differ between studies."""
    images = load(root, "images")
    sha = {r["image_id"]: r["sha256"] for r in images}
    ratings = sorted(
        (
            sha[r["image_id"]],
            r["annotator_id"],
            r["score"],
            r["time_on_item_ms"],
            r["created_at"],
            r["split"],
            r["is_valid"],
        )
        for r in load(root, "ratings")
    )
    images = sorted(
        (
            r["sha256"],
            json.dumps({k: v for k, v in r.items() if k != "image_id"}, default=repr),
        )
        for r in images
    )
    annotators = sorted(json.dumps(r, sort_keys=True) for r in load(root, "annotators"))
    return {"ratings": ratings, "images": images, "annotators": annotators}


def origin(annotator: Annotator) -> str:
    """The id an annotator had in the export it was imported from."""
    if annotator.source == "import":
        return annotator.external_id.split(":", 1)[1]
    return annotator.public_id


def db_state(study: Study) -> dict:
    return {
        "ratings": sorted(
            (
                r.image.sha256,
                origin(r.annotator),
                r.score,
                r.time_on_item_ms,
                r.created_at,
                r.split,
                r.is_valid,
            )
            for r in Rating.objects.filter(study=study).select_related(
                "image", "annotator"
            )
        ),
        "images": sorted(
            (
                i.sha256,
                i.prompt,
                i.domain,
                json.dumps(i.provenance, sort_keys=True),
                i.width,
                i.height,
                i.format,
                i.rating_count,
                i.file.open("rb").read(),
            )
            for i in Image.objects.filter(study=study)
        ),
    }


@pytest.mark.parametrize(
    "fmt,images",
    [("parquet", "embed"), ("parquet", "path"), ("jsonl", "path"), ("csv", "path")],
)
def test_round_trip_is_exact(tmp_path, fmt, images):
    original = rated_study()
    dataset_export(
        study=original,
        out=tmp_path / "a",
        options=ExportOptions(fmt=fmt, images=images),
    )
    copy = new_study(original)
    # Staff say the raters are the same people (an export of this instance).
    report = dataset_import(study=copy, root=tmp_path / "a", same_annotators=True)
    assert report["ratings"] == 18 and report["images"] == 6
    assert report["annotators_mapped"] == report["annotators"] > 0
    before, after = db_state(original), db_state(copy)
    assert after == before  # ratings, splits, times, counters, bytes
    # And the copy exports to the same tables as the original.
    dataset_export(study=original, out=tmp_path / "orig")
    dataset_export(study=copy, out=tmp_path / "copy")
    assert comparable(tmp_path / "copy") == comparable(tmp_path / "orig")
    card = (tmp_path / "copy" / "README.md").read_text()
    assert "18 of the ratings were imported from another dataset" in card
    assert "were imported" not in (tmp_path / "orig" / "README.md").read_text()


def test_round_trip_onto_another_instance_recreates_annotators(tmp_path):
    original = rated_study()
    dataset_export(study=original, out=tmp_path / "a")
    reference = comparable(tmp_path / "a")
    demographics = {a.public_id: a.demographics for a in Annotator.objects.all()}
    # Another installation: neither the study nor its people exist there.
    users = [a.user for a in Annotator.objects.all()]
    # (Records are PROTECTed against deletion; a test may remove them in order.)
    Rating.objects.filter(study=original).delete()
    Assignment.objects.filter(study=original).delete()
    original.delete()
    Annotator.objects.all().delete()
    for user in users:
        user.delete()
    copy = new_study(original)
    dataset_import(study=copy, root=tmp_path / "a")
    for a in Annotator.objects.all():
        assert a.source == "import"
        assert a.external_id == f"study{copy.pk}:{a.public_id}"
        assert a.demographics == demographics[a.public_id]
    dataset_export(study=copy, out=tmp_path / "b")
    assert comparable(tmp_path / "b") == reference


def test_raters_in_a_file_are_new_people_unless_staff_map_them(tmp_path):
    """The annotator ids in a file name nobody here: an export of one study
    imported on the same instance makes new import-scoped identities, never
    ratings by (or consent from) the people who hold those ids."""
    original = rated_study()
    dataset_export(study=original, out=tmp_path / "a")
    people = set(Annotator.objects.values_list("pk", flat=True))
    copy = new_study(original)
    report = dataset_import(study=copy, root=tmp_path / "a")
    assert report["annotators_new"] == report["annotators"] > 0
    assert report["annotators_mapped"] == 0
    raters = Annotator.objects.filter(ratings__study=copy).distinct()
    assert not set(raters.values_list("pk", flat=True)) & people
    assert {a.source for a in raters} == {"import"}
    assert not copy.participations.filter(annotator_id__in=people).exists()
    # The same ratings, by the new identities.
    assert db_state(copy) == db_state(original)
    # One mapped explicitly is that person.
    someone = Rating.objects.filter(study=original).first().annotator
    other = new_study(original, "mapped")
    report = dataset_import(
        study=other,
        root=tmp_path / "a",
        annotator_map={someone.public_id: someone.public_id},
    )
    assert report["annotators_mapped"] == 1
    theirs = Rating.objects.filter(study=original, annotator=someone).count()
    assert Rating.objects.filter(study=other, annotator=someone).count() == theirs


def test_nothing_imported_makes_an_excluded_persons_rating_valid(tmp_path):
    original = rated_study()
    dataset_export(study=original, out=tmp_path / "a")
    someone = Rating.objects.filter(study=original).first().annotator
    services.annotator_set_status(
        annotator=someone, status=Annotator.Status.EXCLUDED, reason="bot"
    )
    # The export still says is_valid true for them (made before the exclusion).
    copy = new_study(original)
    dataset_import(
        study=copy,
        root=tmp_path / "a",
        annotator_map={someone.public_id: someone.public_id},
    )
    assert not Rating.objects.filter(study=copy, annotator=someone, is_valid=True)
    theirs = Rating.objects.filter(study=original, annotator=someone).count()
    assert Rating.objects.filter(study=copy, annotator=someone).count() == theirs
    # A file that marks a rater excluded but their ratings valid.
    for path in (tmp_path / "a" / "annotators" / "data").glob("*.parquet"):
        table = pq.read_table(path).to_pylist()
        for row in table:
            row["excluded"] = True
        pq.write_table(pa.Table.from_pylist(table), path)
    third = new_study(original, "third")
    dataset_import(study=third, root=tmp_path / "a")
    assert Rating.objects.filter(study=third).count() == 18
    assert not Rating.objects.filter(study=third, is_valid=True).exists()
    assert services.integrity_check(study_id=third.pk).excluded_valid_ratings == []


def test_zip_from_the_api_imports_through_the_command(tmp_path, settings, capsys):
    from annotation.datasets.services import export_jobs

    settings.PALATE_EXPORT_DIR = tmp_path / "exports"
    original = rated_study()
    export = export_jobs.export_create(study=original)
    export = export_jobs.export_execute(export_id=export.pk)
    archive = export_jobs.export_file(export)
    copy = new_study(original)
    call_command("import_dataset", copy.slug, str(archive))
    assert json.loads(capsys.readouterr().out)["ratings"] == 18
    assert db_state(copy) == db_state(original)


def test_bad_imports_change_nothing(tmp_path):
    original = rated_study()
    dataset_export(study=original, out=tmp_path / "a")
    media = Path(original.images.first().file.path).parents[2]
    files_before = stored_files(media)
    # A score outside the target study's scale: refused before any write.
    narrow = services.study_create(
        name="Narrow",
        slug="narrow",
        raters_per_image=3,
        scale_min=1,
        scale_max=3,
        scale_labels=[],
    )
    with pytest.raises(InvalidInput, match="outside the study's scale"):
        dataset_import(study=narrow, root=tmp_path / "a")
    # Fewer raters per image than the dataset has.
    few = services.study_create(name="Few", slug="few", raters_per_image=2)
    with pytest.raises(InvalidInput, match="more than the study's raters_per_image"):
        dataset_import(study=few, root=tmp_path / "a")
    # A study that already has images.
    with pytest.raises(InvalidInput, match="already has images"):
        dataset_import(study=original, root=tmp_path / "a")
    # No images in the export.
    dataset_export(
        study=original, out=tmp_path / "meta", options=ExportOptions(images="none")
    )
    with pytest.raises(InvalidInput, match="carries no images"):
        dataset_import(study=new_study(original, "c1"), root=tmp_path / "meta")
    # Not an export at all.
    with pytest.raises(CommandError, match="holds no Palate dataset export"):
        call_command("import_dataset", "c1", str(tmp_path))
    # Someone in the export was erased here since: never imported again.
    someone = Annotator.objects.order_by("pk").first()
    services.annotator_erase(annotator_id=someone.pk)
    with pytest.raises(InvalidInput, match="were erased on this instance"):
        dataset_import(study=new_study(original, "after-erasure"), root=tmp_path / "a")
    assert Image.objects.exclude(study=original).count() == 0
    assert Rating.objects.exclude(study=original).count() == 0
    assert stored_files(media) == files_before


def test_failure_while_writing_rolls_back_and_deletes_stored_files(
    tmp_path, monkeypatch
):
    from annotation.datasets.services import import_export_file as module

    original = rated_study()
    dataset_export(study=original, out=tmp_path / "a")
    media = Path(original.images.first().file.path).parents[2]
    files_before = stored_files(media)

    def boom(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(module, "ratings_create", boom)
    copy = new_study(original)
    with pytest.raises(RuntimeError):
        dataset_import(study=copy, root=tmp_path / "a")
    assert Image.objects.filter(study=copy).count() == 0
    assert stored_files(media) == files_before


def test_an_excluded_annotator_imports_excluded_from_that_study_only(tmp_path):
    """Issue 22, finding 2: an import mapped to the same people (staff say so with
    ``same_annotators``) carries the exclusion as the imported study's (its
    participation), never the person's in every study: their ratings in the
    original stay valid."""
    original = rated_study()
    excluded = Rating.objects.filter(study=original).order_by("pk")[0].annotator
    theirs = Rating.objects.filter(annotator=excluded, study=original)
    n_theirs = theirs.count()
    # Exported as excluded (from a copy of the study they were excluded from).
    first = new_study(original, slug="first")
    dataset_export(study=original, out=tmp_path / "a")
    dataset_import(study=first, root=tmp_path / "a", same_annotators=True)
    services.participation_exclude(annotator=excluded, study=first)
    dataset_export(
        study=first, out=tmp_path / "b", options=ExportOptions(include_excluded=True)
    )
    second = new_study(original, slug="second")
    dataset_import(study=second, root=tmp_path / "b", same_annotators=True)

    excluded.refresh_from_db()
    assert excluded.status == "active"
    statuses = dict(excluded.participations.values_list("study__slug", "status"))
    assert statuses == {
        original.slug: "active",
        "first": "excluded",
        "second": "excluded",
    }
    assert theirs.filter(is_valid=True).count() == n_theirs  # the original's
    imported = Rating.objects.filter(annotator=excluded, study=second)
    assert imported.count() == n_theirs and not imported.filter(is_valid=True).exists()
    assert services.integrity_check().ok
