"""The counts the claim reads instead of counting rows (migration 0025): the
database keeps them (triggers on PostgreSQL and on SQLite), so every writer
keeps them exact: the engine, bulk inserts, deletions, a study's deletion."""

import hashlib
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from annotation import selectors, services
from annotation.engine.selectors import annotator_rated
from annotation.models import (
    Assignment,
    Image,
    Rating,
    RatingTally,
    Study,
    StudyTally,
)
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("engine_path")]


def images_kept(study) -> int:
    return StudyTally.objects.filter(study=study).values_list("images", flat=True)[0]


def rated_kept() -> dict:
    return {
        (t.annotator_id, t.study_id): t.rated
        for t in RatingTally.objects.all()
        if t.rated
    }


def rated_counted() -> dict:
    rows = Rating.objects.values("annotator_id", "study_id").annotate(n=Count("pk"))
    return {(r["annotator_id"], r["study_id"]): r["n"] for r in rows}


def bulk_images(study, n: int, start: int = 0) -> list:
    return Image.objects.bulk_create(
        Image(
            study=study,
            file=f"t/{start + k}.png",
            sha256=hashlib.sha256(f"{study.pk}:{start + k}".encode()).hexdigest(),
            target_ratings=study.raters_per_image,
        )
        for k in range(n)
    )


def test_images_are_counted_as_they_come_and_go():
    study, other = StudyFactory(), StudyFactory()
    make_images(study, 3)
    bulk_images(study, 40)  # one statement of 40 rows
    bulk_images(other, 7)
    assert images_kept(study) == 43 == Image.objects.filter(study=study).count()
    assert images_kept(other) == 7
    Image.objects.filter(study=study, file__startswith="t/1").delete()
    assert images_kept(study) == Image.objects.filter(study=study).count()
    assert images_kept(other) == 7


def test_a_study_with_images_can_still_be_deleted():
    study = StudyFactory()
    bulk_images(study, 5)
    pk = study.pk
    study.delete()
    assert not Study.objects.filter(pk=pk).exists()
    assert not StudyTally.objects.filter(study_id=pk).exists()


def test_ratings_are_counted_by_whoever_writes_them():
    study = StudyFactory(raters_per_image=3, quota_per_annotator=50)
    make_images(study, 4)
    people = [join(AnnotatorFactory(), study) for _ in range(3)]
    # The engine (either path).
    for who in people[:2]:
        for _ in range(3):
            (lease,) = services.assignment_claim(annotator=who, study=study)
            services.rating_submit(assignment_id=lease.pk, annotator=who, score=1)
    # A bulk writer (as the importers do), several annotators in one statement.
    now = timezone.now()
    extra = bulk_images(study, 2, start=100)
    rows = []
    for image in extra:
        for who in people:
            a = Assignment.objects.create(
                study=study,
                image=image,
                annotator=who,
                status=Assignment.Status.SUBMITTED,
                leased_at=now,
                expires_at=now + timedelta(minutes=5),
            )
            rows.append(
                Rating(
                    study=study,
                    image=image,
                    annotator=who,
                    assignment=a,
                    score=2,
                    split="train",
                )
            )
    Image.objects.filter(pk__in=[i.pk for i in extra]).update(rating_count=3)
    Rating.objects.bulk_create(rows)
    assert rated_kept() == rated_counted()
    assert rated_kept()[(people[0].pk, study.pk)] == 5
    assert rated_kept()[(people[2].pk, study.pk)] == 2
    # What the claim and the page read is the count.
    rated, total = selectors.annotator_progress(annotator=people[0], study=study)
    assert (rated, total) == (5, 6)
    assert annotator_rated(annotator_id=people[1].pk, study_id=study.pk) == 5
