"""Exclusion acts on one study's participation; excluding everywhere is its own
action (issue 22, finding 2). Both engine paths (PL/pgSQL and Python) refuse
claims and ratings in a study the annotator was excluded from, and nothing else."""

import pytest
from django.utils import timezone

from annotation import services
from annotation.engine.services import engine_sql
from annotation.models import Image, ModerationEvent, Participation, Rating
from annotation.participants.selectors import exclusion_effects
from core.exceptions import AnnotatorNotActive, Conflict
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = pytest.mark.django_db


def _rate(annotator, study, n):
    for _ in range(n):
        (lease,) = services.assignment_claim(annotator=annotator, study=study)
        services.rating_submit(assignment_id=lease.pk, annotator=annotator, score=4)


@pytest.fixture
def two_studies():
    """One person with 3 ratings and a live lease in study A, 2 ratings in B."""
    a = StudyFactory(name="Study A", raters_per_image=2, quota_per_annotator=10)
    b = StudyFactory(name="Study B", raters_per_image=2, quota_per_annotator=10)
    make_images(a, 5)
    make_images(b, 5, start=50)
    person = join(AnnotatorFactory(), a, b)
    _rate(person, a, 3)
    _rate(person, b, 2)
    services.assignment_claim(annotator=person, study=a)  # a live lease in A
    return a, b, person


@pytest.mark.parametrize("sql", [True, False])
def test_excluding_in_one_study_leaves_the_other_valid(settings, two_studies, sql):
    settings.PALATE_SQL_ENGINE = sql
    a, b, person = two_studies
    b_counts = dict(Image.objects.filter(study=b).values_list("pk", "rating_count"))
    (effect,) = exclusion_effects(annotator=person, study=a)
    assert (effect.ratings, effect.leases, effect.slots) == (3, 1, 4)

    event = services.participation_exclude(annotator=person, study=a, reason="x")

    assert (event.study, event.action, event.slots_reopened) == (a, "exclude", 4)
    mine = Rating.objects.filter(annotator=person)
    assert not mine.filter(study=a, is_valid=True).exists()
    assert mine.filter(study=b, is_valid=True).count() == 2
    assert b_counts == dict(
        Image.objects.filter(study=b).values_list("pk", "rating_count")
    )
    person.refresh_from_db()
    assert person.status == "active"
    statuses = dict(person.participations.values_list("study_id", "status"))
    assert statuses == {a.pk: "excluded", b.pk: "active"}
    # Claims in A are refused; B goes on.
    with pytest.raises(AnnotatorNotActive, match="excluded from this study"):
        services.assignment_claim(annotator=person, study=a)
    _rate(person, b, 1)
    assert mine.filter(study=b, is_valid=True).count() == 3
    with pytest.raises(Conflict, match="already excluded"):
        services.participation_exclude(annotator=person, study=a)


@pytest.mark.parametrize("sql", [True, False])
def test_a_rating_in_flight_in_the_excluded_study_is_refused(
    settings, two_studies, sql
):
    settings.PALATE_SQL_ENGINE = sql
    a, _, person = two_studies
    (lease,) = services.assignment_claim(annotator=person, study=a)
    services.participation_exclude(annotator=person, study=a)
    with pytest.raises(AnnotatorNotActive):
        services.rating_submit(assignment_id=lease.pk, annotator=person, score=3)
    assert not Rating.objects.filter(assignment_id=lease.pk).exists()


def test_the_sql_functions_check_the_participation(two_studies):
    """palate_claim / palate_submit hand an excluded participation to the Python
    path (which refuses) even where everything else is a plain common case: a
    live lease, an active annotator, an open study."""
    if not engine_sql.enabled():
        pytest.skip("PostgreSQL only")
    a, _, person = two_studies
    (lease,) = services.assignment_claim(annotator=person, study=a)
    # Excluded in the row only (no slot released): only the new check can answer.
    Participation.objects.filter(annotator=person, study=a).update(
        status="excluded", excluded_at=timezone.now()
    )
    now = timezone.now()
    outcome, _ = engine_sql.submit(
        assignment_id=lease.pk, annotator_id=person.pk, score=3, now=now
    )
    assert outcome == engine_sql.SLOW
    outcome, _, leases = engine_sql.claim(
        annotator_id=person.pk,
        study_id=a.pk,
        hold=2,
        now=now,
        dealer=services.engine_dealer(),
    )
    assert (outcome, leases) == (engine_sql.SLOW, [])
    # Put the row back so the integrity check after the test has nothing to say.
    Participation.objects.filter(annotator=person, study=a).update(
        status="active", excluded_at=None
    )


def test_excluding_everywhere_lists_and_logs_every_study(two_studies):
    a, b, person = two_studies
    effects = exclusion_effects(annotator=person)
    assert [(e.study, e.slots) for e in effects] == [(a, 4), (b, 2)]
    events = services.annotator_exclude_everywhere(annotator=person, reason="fraud")
    assert [(e.study, e.action, e.slots_reopened) for e in events] == [
        (a, "exclude_all", 4),
        (b, "exclude_all", 2),
    ]
    assert not Rating.objects.filter(annotator=person, is_valid=True).exists()
    assert set(person.participations.values_list("status", flat=True)) == {"excluded"}
    assert ModerationEvent.objects.count() == 2


@pytest.mark.allow_drift
def test_integrity_check_finds_a_valid_rating_of_an_excluded_participation(
    two_studies,
):
    a, b, person = two_studies
    Participation.objects.filter(annotator=person, study=a).update(
        status="excluded", excluded_at=timezone.now()
    )
    drift = services.integrity_check()
    theirs_in_a = Rating.objects.filter(annotator=person, study=a)
    assert sorted(drift.excluded_valid_ratings) == sorted(
        theirs_in_a.values_list("pk", flat=True)
    )
    assert len(drift.inactive_leases) == 1
    services.integrity_repair()
    assert services.integrity_check().ok
    assert not theirs_in_a.filter(is_valid=True).exists()
    assert Rating.objects.filter(annotator=person, study=b, is_valid=True).count() == 2
