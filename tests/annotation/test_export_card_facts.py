"""The dataset card states only what the exported data shows (issue 22, finding
5): repeats shown are counted, time on item is counted for collected and
imported ratings alike, annotators' sources and ids come from the rows."""

import pytest

from annotation import services
from annotation.datasets.services.export import dataset_export
from annotation.datasets.services.import_export_file import dataset_import
from annotation.datasets.services.import_ratings import RatingRecord, ratings_import
from annotation.models import Rating, StreamItem, Study
from tests.annotation.export_fixtures import rated_study
from tests.factories import AnnotatorFactory, make_images, png_bytes

pytestmark = pytest.mark.django_db


def card(study, tmp_path, name="ds") -> str:
    dataset_export(study=study, out=tmp_path / name)
    return " ".join((tmp_path / name / "README.md").read_text().split())


def _study_with_repeats() -> Study:
    study = services.study_create(
        name="Repeats",
        slug="repeats",
        raters_per_image=3,
        quota_per_annotator=6,
        status=Study.Status.OPEN,
    )
    services.quality_config_update(study=study, repeat_rate=1.0, repeat_gap=1)
    make_images(study, 6)
    for _ in range(3):
        a = AnnotatorFactory(source="prolific")
        services.participation_consent(
            annotator=a, study=study, token=study.invite_token
        )
        while leases := services.assignment_claim(annotator=a, study=study):
            services.rating_submit(assignment_id=leases[0].pk, annotator=a, score=4)
    for item in StreamItem.objects.filter(status="pending").order_by("pk"):
        services.stream_item_answer(item_id=item.pk, annotator=item.annotator, score=4)
    return study


def test_repeats_shown_are_counted_not_denied(tmp_path):
    study = _study_with_repeats()
    repeats = StreamItem.objects.filter(study=study, kind="repeat").count()
    assert repeats > 0
    text = card(study, tmp_path)
    assert "never sees an image twice" not in text
    assert f"Quality control showed {repeats} repeats" in text
    assert (
        f"an annotator was shown an image they had already rated {repeats} times"
        in text
    )
    assert "by 3 annotators who joined through a Prolific link (3); 3 of them " in text
    assert "of the ratings collected here, all 18 carry it." in text


def test_no_repeats_no_claim_of_them(tmp_path):
    text = card(rated_study(), tmp_path)
    assert "repeats" not in text
    assert "No annotator was shown an image they had already rated." in text
    assert "were imported" not in text


def test_imported_ratings_with_time_on_item_are_not_said_to_lack_it(tmp_path):
    original = rated_study()
    assert not Rating.objects.filter(time_on_item_ms__isnull=True).exists()
    dataset_export(study=original, out=tmp_path / "a")
    copy = services.study_create(
        name="Copy", slug="copy", raters_per_image=original.raters_per_image
    )
    dataset_import(study=copy, root=tmp_path / "a")
    text = card(copy, tmp_path, "copy")
    assert "no time on item" not in text and "none carries" not in text
    assert (
        "18 of the ratings were imported from another dataset rather than "
        "collected here; of those, all 18 carry the time on item recorded there."
    ) in text
    assert "collected here, each" not in text  # nothing was collected here


def test_imported_ratings_without_time_on_item_are_said_to_lack_it(tmp_path):
    study = services.study_create(name="Bare", slug="bare", raters_per_image=2)
    ratings_import(
        study=study,
        dataset="elsewhere",
        records=[
            RatingRecord(
                rater=f"r{r}",
                score=3 + r,
                image_key=f"i{i}",
                image_bytes=png_bytes(30_000 + i),
            )
            for r in range(2)
            for i in range(3)
        ],
    )
    text = card(study, tmp_path)
    assert "6 of the ratings were imported" in text
    assert "of those, none carries one." in text


def test_ids_an_import_kept_are_not_called_random(tmp_path):
    study = rated_study()
    first = Rating.objects.filter(study=study).order_by("pk").first().annotator
    first.public_id = "rater-17"
    first.save(update_fields=["public_id"])
    text = card(study, tmp_path)
    assert "only under a random pseudonymous id" not in text
    assert "and 1 kept as the imported dataset gave them" in text
