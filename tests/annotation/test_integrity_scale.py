"""The integrity check at scale (issue 29): duplicate pairs are counted only
when the database no longer enforces them, and the study-scoped check finds
ratings excluded from their own study without scanning every rating."""

import pytest
from django.db import connection
from django.utils import timezone

from annotation import services
from annotation.integrity import services as integrity
from annotation.models import Participation, Rating
from tests.factories import StudyFactory, join, make_images, rate_image

pytestmark = [pytest.mark.django_db, pytest.mark.allow_drift]


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the unique index is PostgreSQL's"
)
def test_duplicates_are_counted_once_the_unique_index_is_gone(study):
    (image,) = make_images(study, 1)
    (first,) = rate_image(image, 1)
    assert integrity._unique_pair_enforced(Rating)
    with connection.cursor() as cur:  # the schema altered by hand (rolled back)
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks
        cur.execute("ALTER TABLE annotation_rating DROP CONSTRAINT rating_unique_pair")
    assert not integrity._unique_pair_enforced(Rating)
    Rating.objects.create(
        study=study, image=image, annotator=first.annotator, score=3, split="train"
    )
    drift = services.integrity_check(study_id=study.pk)
    assert drift.duplicate_ratings == [(image.pk, first.annotator_id, 2)]
    assert drift.rating_count == [(image.pk, 1, 2)]


def test_a_rating_excluded_from_its_own_study_only_is_drift(study):
    other = StudyFactory(raters_per_image=study.raters_per_image)
    (here,) = make_images(study, 1)
    (there,) = make_images(other, 1)
    (r_here,) = rate_image(here, 1)
    (r_there,) = rate_image(there, 1)
    join(r_here.annotator, study)
    join(r_there.annotator, other)
    join(r_there.annotator, study)  # excluded here, where they rated nothing
    Participation.objects.filter(study=study).update(
        status="excluded", excluded_at=timezone.now()
    )
    assert services.integrity_check().excluded_valid_ratings == [r_here.pk]
    assert services.integrity_check(study_id=other.pk).excluded_valid_ratings == []
