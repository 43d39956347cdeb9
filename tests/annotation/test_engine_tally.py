"""The counts the claim reads instead of counting rows (migration 0025): the
database keeps them (triggers on PostgreSQL and on SQLite), so every writer
keeps them exact: the engine, bulk inserts, deletions, a study's deletion."""

import hashlib
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Count, Q
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


def both_kept() -> dict:
    """(rated, valid) per (annotator, study) as the tally keeps them (rows with
    nothing left aside)."""
    return {
        (t.annotator_id, t.study_id): (t.rated, t.valid)
        for t in RatingTally.objects.all()
        if t.rated or t.valid
    }


def both_counted() -> dict:
    rows = Rating.objects.values("annotator_id", "study_id").annotate(
        n=Count("pk"), v=Count("pk", filter=Q(is_valid=True))
    )
    return {(r["annotator_id"], r["study_id"]): (r["n"], r["v"]) for r in rows}


def rate_all(study, who, n: int) -> None:
    for _ in range(n):
        (lease,) = services.assignment_claim(annotator=who, study=study)
        services.rating_submit(assignment_id=lease.pk, annotator=who, score=1)


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


# The bulk UPDATE below flips is_valid behind the images' counters on purpose.
@pytest.mark.allow_drift
def test_valid_ratings_are_counted_through_every_way_they_are_invalidated():
    """Migration 0027: ``RatingTally.valid`` follows ``is_valid`` whoever flips
    it: exclusion from one study, exclusion everywhere (quality control's
    ``annotator_moderate``), erasure, and a bulk UPDATE or DELETE."""
    study = StudyFactory(raters_per_image=5, quota_per_annotator=50)
    other = StudyFactory(raters_per_image=5, quota_per_annotator=50)
    make_images(study, 6)
    make_images(other, 6)
    people = [join(join(AnnotatorFactory(), study), other) for _ in range(5)]
    for who in people:
        rate_all(study, who, 3)
        rate_all(other, who, 2)
    assert both_kept() == both_counted()
    assert both_kept()[(people[0].pk, study.pk)] == (3, 3)
    # Excluded from one study: invalid there, still valid in the other.
    services.participation_exclude(annotator=people[0], study=study, reason="t")
    assert both_kept()[(people[0].pk, study.pk)] == (3, 0)
    assert both_kept()[(people[0].pk, other.pk)] == (2, 2)
    # Quality control excludes everywhere.
    services.annotator_moderate(
        annotator=people[1], action="exclude_all", reason="failed checks"
    )
    assert both_kept()[(people[1].pk, study.pk)] == (3, 0)
    assert both_kept()[(people[1].pk, other.pk)] == (2, 0)
    # Erasure.
    services.annotator_erase(annotator_id=people[2].pk, reason="asked")
    assert both_kept()[(people[2].pk, other.pk)] == (2, 0)
    assert both_kept() == both_counted()
    # Bulk SQL: one statement flipping rows of several annotators both ways,
    # an UPDATE that changes nothing counted, then deletions.
    Rating.objects.filter(annotator__in=people[2:4]).update(is_valid=False)
    Rating.objects.filter(annotator=people[0]).update(is_valid=True)
    Rating.objects.filter(annotator=people[4]).update(score=2)
    assert both_kept() == both_counted()
    assert both_kept()[(people[0].pk, study.pk)] == (3, 3)
    assert both_kept()[(people[3].pk, other.pk)] == (2, 0)
    assert both_kept()[(people[4].pk, other.pk)] == (2, 2)
    Rating.objects.filter(annotator=people[4], study=study).first().delete()
    Rating.objects.filter(annotator=people[3], study=other).delete()
    assert both_kept() == both_counted()
    assert both_kept()[(people[4].pk, study.pk)] == (2, 2)


def test_a_clean_database_has_no_tally_drift():
    study = StudyFactory(raters_per_image=3, quota_per_annotator=50)
    make_images(study, 4)
    people = [join(AnnotatorFactory(), study) for _ in range(3)]
    for who in people:
        rate_all(study, who, 2)
    services.participation_exclude(annotator=people[0], study=study, reason="t")
    drift = services.integrity_check()
    assert drift.study_tally == [] and drift.rating_tally == []
    assert drift.ok


def _sql(statement: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


# The tallies are corrupted by hand on purpose (the check's job is to see it).
@pytest.mark.allow_drift
def test_corrupted_tallies_are_reported_and_repaired(capsys):
    """Every way a tally can disagree with its rows (too high, valid too low, a
    missing row where there are rows, a row where there are none) is drift on
    both databases, the study-scoped check sees only its study, and the repair
    sets each one from the rows."""
    study, other = StudyFactory(quota_per_annotator=50), StudyFactory()
    make_images(study, 4)
    make_images(other, 2)
    a, b, c = (join(AnnotatorFactory(), study) for _ in range(3))
    for who in (a, b):
        rate_all(study, who, 2)
    _sql(
        "UPDATE annotation_studytally SET images = images + 5 WHERE study_id = %s",
        [study.pk],
    )
    _sql("DELETE FROM annotation_studytally WHERE study_id = %s", [other.pk])
    _sql(
        "UPDATE annotation_ratingtally SET rated = 7 "
        "WHERE annotator_id = %s AND study_id = %s",
        [a.pk, study.pk],
    )
    _sql(
        "DELETE FROM annotation_ratingtally WHERE annotator_id = %s AND study_id = %s",
        [b.pk, study.pk],
    )
    _sql(
        "INSERT INTO annotation_ratingtally (annotator_id, study_id, rated, valid) "
        "VALUES (%s, %s, 0, 3)",
        [c.pk, study.pk],
    )
    drift = services.integrity_check()
    assert drift.study_tally == [(study.pk, 9, 4), (other.pk, 0, 2)]
    assert drift.rating_tally == [
        (a.pk, study.pk, 7, 2, 2, 2),
        (b.pk, study.pk, 0, 2, 0, 2),
        (c.pk, study.pk, 0, 0, 3, 0),
    ]
    assert "rating_tally: 3" in drift.summary()
    with pytest.raises(CommandError):
        call_command("check_integrity")
    out = capsys.readouterr().out
    assert f"study {study.pk}: images tally 9, rows 4" in out
    assert f"annotator {b.pk} in study {study.pk}: tally 0 rated (0 valid)" in out
    assert services.integrity_check(study_id=other.pk).study_tally == [(other.pk, 0, 2)]
    assert services.integrity_check(study_id=other.pk).rating_tally == []

    assert services.integrity_repair() == drift
    assert services.integrity_check().ok
    assert images_kept(study) == 4 and images_kept(other) == 2
    assert both_kept() == both_counted()
    assert both_kept()[(b.pk, study.pk)] == (2, 2)
    assert (c.pk, study.pk) not in both_kept()
    # The repaired tallies go on counting.
    services.participation_exclude(annotator=a, study=study, reason="t")
    assert both_kept()[(a.pk, study.pk)] == (2, 0)
