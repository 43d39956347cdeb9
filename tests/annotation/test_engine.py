"""The assignment engine's guarantees, one at a time (single-threaded): tests for
annotation/engine/services/engine.py."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotation import services
from annotation.models import Annotator, Assignment, Image, Rating, Study
from core.exceptions import (
    AnnotatorNotActive,
    Conflict,
    InvalidInput,
    NotFound,
    StudyNotOpen,
)
from tests.factories import (
    AnnotatorFactory,
    StudyFactory,
    join,
    make_images,
    rate_image,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def annotator(study):
    """An annotator who joined ``study`` through its link."""
    return join(AnnotatorFactory(), study)


def claim(annotator, study, **kw):
    join(annotator, study)
    leases = services.assignment_claim(annotator=annotator, study=study, **kw)
    return leases[0] if leases else None


def rate(annotator, study, score=4, **kw):
    a = claim(annotator, study, **kw)
    assert a is not None
    services.rating_submit(assignment_id=a.pk, annotator=annotator, score=score)
    return a


def test_claim_leases_an_image_and_holds_a_slot(study, annotator):
    make_images(study, 2)
    a = claim(annotator, study)
    assert a.status == Assignment.Status.LEASED
    assert a.expires_at - a.leased_at == timedelta(seconds=study.lease_seconds)
    image = Image.objects.get(pk=a.image_id)
    assert (image.lease_count, image.rating_count, image.open_slots) == (1, 0, 2)


def test_claim_again_returns_the_same_lease(study, annotator):
    make_images(study, 3)
    first = claim(annotator, study)
    assert claim(annotator, study).pk == first.pk
    assert Assignment.objects.filter(annotator=annotator).count() == 1


def test_hold_two_leases_distinct_images(study, annotator):
    make_images(study, 3)
    leases = services.assignment_claim(annotator=annotator, study=study, hold=2)
    assert len({a.image_id for a in leases}) == 2
    with pytest.raises(InvalidInput):
        services.assignment_claim(annotator=annotator, study=study, hold=9)


def test_fullest_image_is_dealt_first(study):
    images = make_images(study, 5)
    target = images[3]
    rate_image(target, 2)  # one slot left
    a = claim(AnnotatorFactory(), study)
    assert a.image_id == target.pk


def test_random_among_equals_differs_between_annotators(db):
    study = StudyFactory(raters_per_image=15)
    make_images(study, 40)
    firsts = set()
    for _ in range(12):
        annotator = AnnotatorFactory()
        a = claim(annotator, study)
        firsts.add(a.image_id)
        # Skipping hands the slot back, so all 40 images are equal again.
        services.assignment_skip(assignment_id=a.pk, annotator=annotator)
    # Same first image for 12 annotators out of 40 equals: a broken shuffle
    # (chance of fewer than 4 distinct firsts is below 1e-9).
    assert len(firsts) >= 4


def test_dataset_completes_image_by_image(study):
    make_images(study, 5)
    images = [rate(AnnotatorFactory(), study).image_id for _ in range(6)]
    assert len(set(images[:3])) == 1 and len(set(images[3:])) == 1


def test_rating_fills_slot_and_never_exceeds_target(study):
    make_images(study, 1)
    for _ in range(3):
        rate(AnnotatorFactory(), study)
    image = Image.objects.get()
    assert (image.rating_count, image.lease_count, image.open_slots) == (3, 0, 0)
    assert claim(AnnotatorFactory(), study) is None


def test_database_refuses_more_ratings_than_target(study):
    (image,) = make_images(study, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Image.objects.filter(pk=image.pk).update(rating_count=F("target_ratings") + 1)


def test_database_refuses_a_second_rating_of_the_same_pair(study, annotator):
    make_images(study, 1)
    a = rate(annotator, study)
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(
            study=study, image_id=a.image_id, annotator=annotator, score=1
        )


def test_annotator_never_rates_an_image_twice(study, annotator):
    make_images(study, 2)
    seen = [rate(annotator, study).image_id for _ in range(2)]
    assert len(set(seen)) == 2
    assert claim(annotator, study) is None


def test_same_score_again_is_a_no_op_and_another_score_conflicts(study, annotator):
    make_images(study, 2)
    a = claim(annotator, study)
    r1, created1 = services.rating_submit(
        assignment_id=a.pk, annotator=annotator, score=5
    )
    r2, created2 = services.rating_submit(
        assignment_id=a.pk, annotator=annotator, score=5
    )
    assert (created1, created2, r1.pk) == (True, False, r2.pk)
    with pytest.raises(Conflict, match="already rated this image 5"):
        services.rating_submit(assignment_id=a.pk, annotator=annotator, score=2)
    assert Image.objects.get(pk=a.image_id).rating_count == 1


def test_score_outside_the_scale_is_refused_and_changes_nothing(study, annotator):
    make_images(study, 1)
    a = claim(annotator, study)
    for bad in (0, 8, -3):
        with pytest.raises(InvalidInput, match="between 1 and 7"):
            services.rating_submit(assignment_id=a.pk, annotator=annotator, score=bad)
    image = Image.objects.get()
    assert (image.rating_count, image.lease_count) == (0, 1)
    assert not Rating.objects.exists()


def test_someone_elses_assignment_is_not_found(study, annotator):
    make_images(study, 1)
    a = claim(annotator, study)
    other = AnnotatorFactory()
    with pytest.raises(NotFound):
        services.rating_submit(assignment_id=a.pk, annotator=other, score=3)
    with pytest.raises(NotFound):
        services.assignment_skip(assignment_id=a.pk, annotator=other)
    with pytest.raises(NotFound):
        services.rating_submit(assignment_id=999_999, annotator=other, score=3)


def test_skipped_image_is_never_shown_again_and_frees_its_slot(study, annotator):
    make_images(study, 2)
    a = claim(annotator, study)
    services.assignment_skip(assignment_id=a.pk, annotator=annotator)
    services.assignment_skip(assignment_id=a.pk, annotator=annotator)  # no-op
    assert Image.objects.get(pk=a.image_id).lease_count == 0
    b = claim(annotator, study)
    assert b.image_id != a.image_id
    services.assignment_skip(assignment_id=b.pk, annotator=annotator)
    assert claim(annotator, study) is None
    with pytest.raises(Conflict, match="skipped"):
        services.rating_submit(assignment_id=a.pk, annotator=annotator, score=3)


def test_skip_after_rating_conflicts(study, annotator):
    make_images(study, 1)
    a = rate(annotator, study)
    with pytest.raises(Conflict):
        services.assignment_skip(assignment_id=a.pk, annotator=annotator)


def test_quota_stops_dealing(annotator):
    study = StudyFactory(raters_per_image=2, quota_per_annotator=3)
    make_images(study, 6)
    for _ in range(3):
        rate(annotator, study)
    assert claim(annotator, study) is None
    # The quota also counts live leases: with hold=2 after two ratings only one more.
    other = AnnotatorFactory()
    rate(other, study)
    rate(other, study)
    assert len(services.assignment_claim(annotator=other, study=study, hold=2)) == 1


@pytest.mark.parametrize("status", ["paused", "banned", "excluded"])
def test_inactive_annotator_gets_a_message(study, annotator, status):
    make_images(study, 1)
    services.annotator_set_status(annotator=annotator, status=status)
    annotator.refresh_from_db()
    with pytest.raises(AnnotatorNotActive) as err:
        claim(annotator, study)
    assert err.value.http_status == 403 and err.value.message


def test_paused_annotator_cannot_submit_a_held_lease(study, annotator):
    make_images(study, 1)
    a = claim(annotator, study)
    services.annotator_set_status(annotator=annotator, status="paused")
    annotator.refresh_from_db()
    with pytest.raises((AnnotatorNotActive, Conflict)):
        services.rating_submit(assignment_id=a.pk, annotator=annotator, score=3)
    assert Image.objects.get().lease_count == 0  # pausing released the lease


@pytest.mark.parametrize("status", [Study.Status.CLOSED, Study.Status.DRAFT])
def test_study_not_open_deals_nothing(annotator, status):
    study = StudyFactory(status=status)
    make_images(study, 1)
    with pytest.raises(StudyNotOpen):
        claim(annotator, study)


def test_expired_lease_returns_its_slot_on_the_next_claim(study):
    make_images(study, 1)
    now = timezone.now()
    first = AnnotatorFactory()
    a = claim(first, study, now=now)
    later = now + timedelta(seconds=study.lease_seconds + 1)
    # Fill the image with others after the lease ran out; their claims sweep it.
    for _ in range(3):
        b = claim(AnnotatorFactory(), study, now=later)
        services.rating_submit(
            assignment_id=b.pk, annotator=b.annotator, score=3, now=later
        )
    a.refresh_from_db()
    assert a.status == Assignment.Status.EXPIRED
    image = Image.objects.get()
    assert (image.rating_count, image.lease_count) == (3, 0)
    with pytest.raises(Conflict, match="ran out"):
        services.rating_submit(assignment_id=a.pk, annotator=first, score=3, now=later)
    assert Rating.objects.count() == 3


def test_expired_lease_is_accepted_while_the_image_has_room(study, annotator):
    make_images(study, 1)
    now = timezone.now()
    a = claim(annotator, study, now=now)
    later = now + timedelta(seconds=study.lease_seconds + 1)
    assert services.lease_expire(now=later) == 1
    assert services.lease_expire(now=later) == 0  # idempotent
    rating, created = services.rating_submit(
        assignment_id=a.pk, annotator=annotator, score=6, now=later
    )
    assert created and rating.time_on_item_ms >= study.lease_seconds * 1000
    image = Image.objects.get()
    assert (image.rating_count, image.lease_count) == (1, 0)


def test_overdue_but_unswept_lease_keeps_its_slot(study, annotator):
    make_images(study, 1)
    now = timezone.now()
    a = claim(annotator, study, now=now)
    later = now + timedelta(hours=1)
    _, created = services.rating_submit(
        assignment_id=a.pk, annotator=annotator, score=2, now=later
    )
    assert created
    image = Image.objects.get()
    assert (image.rating_count, image.lease_count) == (1, 0)


def test_expired_lease_is_not_dealt_again_to_the_same_annotator(study, annotator):
    make_images(study, 1)
    now = timezone.now()
    claim(annotator, study, now=now)
    later = now + timedelta(seconds=study.lease_seconds + 1)
    assert claim(annotator, study, now=later) is None
    assert claim(AnnotatorFactory(), study, now=later) is not None


def test_excluding_an_annotator_reopens_their_slots(study, annotator):
    make_images(study, 2)
    rate(annotator, study)
    claim(annotator, study)
    reopened = services.annotator_set_status(annotator=annotator, status="excluded")
    assert reopened == 2
    assert not Rating.objects.filter(is_valid=True).exists()
    assert sum(Image.objects.values_list("open_slots", flat=True)) == 6
    assert Annotator.objects.get(pk=annotator.pk).status == "excluded"


def test_sweep_task_expires_every_overdue_lease(study, settings):
    from annotation.tasks import sweep_expired_leases

    make_images(study, 3)
    past = timezone.now() - timedelta(hours=1)
    for _ in range(3):
        claim(AnnotatorFactory(), study, now=past)
    assert sweep_expired_leases() == 3
    assert not Assignment.objects.filter(status="leased").exists()
    assert set(Image.objects.values_list("lease_count", flat=True)) == {0}


def test_participation_completion_code_is_stable(study, annotator):
    p = services.participation_get_or_create(annotator=annotator, study=study)
    code = services.participation_complete(participation=p).completion_code
    assert (
        code
        and services.participation_complete(participation=p).completion_code == code
    )


def test_time_on_item_counts_from_when_the_image_came_to_the_front(study, annotator):
    make_images(study, 3)
    t0 = timezone.now()
    first, preloaded = services.assignment_claim(
        annotator=annotator, study=study, hold=2, now=t0
    )
    assert first.shown_at == t0 and preloaded.shown_at is None
    t1 = t0 + timedelta(seconds=30)
    services.rating_submit(assignment_id=first.pk, annotator=annotator, score=3, now=t1)
    front = services.assignment_claim(annotator=annotator, study=study, hold=2, now=t1)
    assert front[0].pk == preloaded.pk and front[0].shown_at == t1
    t2 = t1 + timedelta(seconds=4)
    rating, _ = services.rating_submit(
        assignment_id=preloaded.pk, annotator=annotator, score=5, now=t2
    )
    assert rating.time_on_item_ms == 4000
    assert Rating.objects.get(assignment=first).time_on_item_ms == 30000
