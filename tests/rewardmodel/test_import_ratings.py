"""import_ratings: per-annotator datasets become real study ratings (PAMELA's
layout included); import_external_scores: population scores."""

import io

import pytest
from django.core.management import CommandError, call_command

from annotation import selectors
from annotation.models import Annotator, Image, Rating
from rewardmodel.models import ExternalItem, ExternalSource
from tests.factories import StudyFactory, png_bytes

from .pamela_fixture import pamela_fixture

pytestmark = pytest.mark.django_db


def test_pamela_layout_import_keeps_published_splits(db, tmp_path):
    published = pamela_fixture(tmp_path)
    out = io.StringIO()
    call_command(
        "import_ratings",
        "pamela-mini",
        str(tmp_path),
        "--layout",
        "pamela",
        "--create",
        "--scale-min",
        "1",
        "--scale-max",
        "10",
        stdout=out,
    )
    counts = selectors.split_counts(study=Rating.objects.first().study)
    assert counts == published  # the dataset's own splits, not re-hashed
    study = Rating.objects.first().study
    assert (study.scale_min, study.scale_max) == (1, 10)
    assert Image.objects.filter(study=study).count() == 48
    raters = Annotator.objects.filter(source="import")
    assert raters.count() == 24
    assert {"age", "gender", "nationality"} <= set(raters.first().demographics)
    image = Image.objects.filter(study=study).first()
    assert image.provenance["type"] in ("Art", "Photorealism")
    assert image.provenance["visual_group"].startswith("group")
    # Counters agree with the rows (the engine's invariant holds).
    for im in Image.objects.filter(study=study):
        assert im.rating_count == im.ratings.count() <= im.target_ratings
    # Importing again changes nothing.
    before = Rating.objects.count()
    call_command("import_ratings", "pamela-mini", str(tmp_path), "--layout", "pamela")
    assert Rating.objects.count() == before


def test_bad_rows_are_refused_and_nothing_changes(db, tmp_path):
    study = StudyFactory(scale_min=1, scale_max=7)
    (tmp_path / "a.png").write_bytes(png_bytes(70_001))
    path = tmp_path / "r.csv"
    path.write_text("who,stars,file\nu1,5,a.png\nu2,9,a.png\nu3,x,a.png\n")
    args = ["import_ratings", study.slug, str(path)]
    with pytest.raises(CommandError, match="No 'rater' column"):
        call_command(*args)
    mapping = ["--map", "rater=who", "--map", "score=stars", "--map", "image=file"]
    with pytest.raises(CommandError, match="r.csv line 3: score 9 outside") as exc:
        call_command(*args, *mapping)
    assert "r.csv line 4: score 'x' is not a number" in str(exc.value)
    assert not Rating.objects.exists() and not Image.objects.exists()
    assert not Annotator.objects.filter(source="import").exists()
    path.write_text("who,stars,file\nu1,5,a.png\nu2,7,a.png\n")
    call_command(*args, *mapping, stdout=io.StringIO())
    assert Rating.objects.filter(study=study).count() == 2


def test_one_command_reproduces_the_protocol(db, tmp_path, rm_settings):
    """Import, embed, train on train, select on validation, print test_seen and
    test_unseen with intervals next to the population model: one command."""
    pamela_fixture(tmp_path, seed=1)
    out = io.StringIO()
    call_command(
        "import_ratings",
        "pamela-repro",
        str(tmp_path),
        "--layout",
        "pamela",
        "--create",
        "--scale-min",
        "1",
        "--scale-max",
        "10",
        "--train",
        stdout=out,
        stderr=io.StringIO(),
    )
    text = out.getvalue()
    assert "test_seen" in text and "test_unseen k=20" in text, text
    assert "population" in text and "LOO consensus" in text
    assert "selected on validation only" in text
    assert "[" in text  # intervals
    from rewardmodel.models import ModelVersion

    v = ModelVersion.objects.get()
    assert v.is_active and v.study.slug == "pamela-repro"
    assert v.data_counts["ratings_test_unseen"] > 0


def test_external_population_scores(rated_study, tmp_path):
    study, _ = rated_study
    for i in range(6):
        (tmp_path / f"ext{i}.png").write_bytes(png_bytes(31_000 + i, size=(24, 24)))
    csv_path = tmp_path / "ava_like.csv"
    csv_path.write_text(
        "path,score,n\n"
        + "".join(f"ext{i}.png,{2 + i * 1.1:.1f},200\n" for i in range(6))
    )
    call_command(
        "import_external_scores",
        study.slug,
        str(csv_path),
        "--scale-min",
        "1",
        "--scale-max",
        "10",
        stdout=io.StringIO(),
    )
    source = ExternalSource.objects.get(name="ava-like")
    assert source.kind == "population" and source.scale_max == 10
    assert ExternalItem.objects.filter(source=source).count() == 6
    from rewardmodel.snapshot import snapshot_take

    assert snapshot_take(study_id=study.pk).counts["external_population_scores"] == 6
    # Ratings by individual people are not external scores.
    per_user = tmp_path / "people.csv"
    per_user.write_text(f"image,user,score\n{study.images.first().pk},u1,3\n")
    with pytest.raises(CommandError, match="import_ratings"):
        call_command("import_external_scores", study.slug, str(per_user))


def test_an_erased_rater_is_never_imported_again(db, tmp_path):
    """Erasure clears the external id; its keyed digest (never the id) keeps the
    same dataset from bringing the person's ratings back."""
    from annotation import services

    study = StudyFactory(scale_min=1, scale_max=7)
    (tmp_path / "a.png").write_bytes(png_bytes(70_002))
    path = tmp_path / "r.csv"
    path.write_text("rater,score,image\nu1,5,a.png\nu2,6,a.png\n")
    call_command("import_ratings", study.slug, str(path), stdout=io.StringIO())
    person = Annotator.objects.get(source="import", external_id__endswith=":u1")
    services.annotator_erase(annotator_id=person.pk)
    before = Rating.objects.count()
    with pytest.raises(CommandError, match="u1 .*were erased on this instance"):
        call_command("import_ratings", study.slug, str(path), stdout=io.StringIO())
    assert Rating.objects.count() == before
    assert not Annotator.objects.filter(external_id__contains="u1").exists()
