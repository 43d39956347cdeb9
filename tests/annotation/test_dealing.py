"""Adaptive dealing in the engine (issue 27, ``annotation.engine.services.dealing``):
the rule on both paths (Python, and PL/pgSQL on PostgreSQL), the same rows on
both, and the engine's guarantees under it (target never exceeded, no pair
twice, a small study run to the end, many threads at once).

The rankings here are written directly (``dealing_ranking_replace``): what is
tested is the engine's use of them; ``tests/rewardmodel/test_dealing.py``
tests how the model computes them."""

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation import services
from annotation.engine.services.dealing import (
    dealing_policy_set,
    dealing_ranking_replace,
)
from annotation.models import Assignment, DealingRank, Image, Rating, Study
from core.exceptions import InvalidInput
from tests.annotation.test_concurrency import assert_exact, run_crowd
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = pytest.mark.django_db

PATHS = [
    pytest.param(True, marks=pytest.mark.postgres, id="sql"),
    pytest.param(False, id="python"),
]


def _adaptive(study, *, warmup=0, band=1000):
    return dealing_policy_set(study=study, policy="adaptive", warmup=warmup, band=band)


def _rank(study, annotator, images):
    dealing_ranking_replace(
        study_id=study.pk,
        annotator_id=annotator.pk,
        ranked=[(im.pk, 1.0 / (n + 1)) for n, im in enumerate(images)],
        uncertainty=0.5,
        version_id=None,
    )


def _claim_rate(who, study, score=4):
    lease = services.assignment_claim(annotator=who, study=study)
    if lease:
        services.rating_submit(assignment_id=lease[0].pk, annotator=who, score=score)
    return lease


@pytest.mark.parametrize("sql", PATHS)
def test_adaptive_deals_the_best_ranked_image_and_records_it(settings, sql):
    settings.PALATE_SQL_ENGINE = sql
    study = StudyFactory(raters_per_image=3, quota_per_annotator=10)
    images = make_images(study, 6)
    who = join(AnnotatorFactory(), study)
    _adaptive(study)
    order = [images[4], images[1], images[5], images[0], images[3], images[2]]
    _rank(study, who, order)
    dealt = []
    for _ in range(3):
        dealt.append(_claim_rate(who, study)[0])
    assert [a.image_id for a in dealt] == [im.pk for im in order[:3]]
    rows = Assignment.objects.filter(annotator=who).order_by("pk")
    assert [(a.dealt_by, a.dealt_rank) for a in rows] == [
        ("adaptive", 1),
        ("adaptive", 2),
        ("adaptive", 3),
    ]
    assert rows[0].dealt_information == pytest.approx(1.0)


@pytest.mark.parametrize("sql", PATHS)
def test_warmup_band_and_fallback_deal_fullest_first(settings, sql):
    settings.PALATE_SQL_ENGINE = sql
    study = StudyFactory(raters_per_image=3, quota_per_annotator=10)
    images = make_images(study, 5)
    helper = join(AnnotatorFactory(), study)
    who = join(AnnotatorFactory(), study)
    # images[0] is the fullest (two ratings, one slot open).
    for _ in range(2):
        other = join(AnnotatorFactory(), study)
        _claim_rate(other, study)
    fullest = Image.objects.filter(study=study).order_by("open_slots").first()
    assert fullest.open_slots == 1
    emptiest = [im for im in images if im.pk != fullest.pk]
    _adaptive(study, warmup=1, band=1000)
    _rank(study, who, emptiest)
    # Warm-up: no rating yet, so fullest-first, however the ranking reads and
    # however wide the band.
    first = _claim_rate(who, study)[0]
    assert first.image_id == fullest.pk
    assert Assignment.objects.get(pk=first.pk).dealt_by == "fullest-first"
    _adaptive(study, warmup=1, band=0)
    # Past the warm-up, band 0: only the fullest level (4 untouched images,
    # 3 open slots each) may be chosen: the best-ranked of them.
    second = _claim_rate(who, study)[0]
    assert second.image_id == emptiest[0].pk
    # Someone else (no ranking: fullest-first) makes that image the fullest;
    # an annotator whose ranking holds only the emptier images gets it by
    # fullest-first, since band 0 allows nothing else.
    assert _claim_rate(helper, study)[0].image_id == emptiest[0].pk
    late = join(AnnotatorFactory(), study)
    _adaptive(study, warmup=0, band=0)
    _rank(study, late, emptiest[1:])
    got = services.assignment_claim(annotator=late, study=study)[0]
    assert got.image_id == emptiest[0].pk
    assert Assignment.objects.get(pk=got.pk).dealt_by == "fullest-first"


@pytest.mark.postgres
def test_adaptive_claim_is_still_one_statement(study):
    study.raters_per_image, study.quota_per_annotator = 2, 10
    study.save()
    images = make_images(study, 4)
    who = join(AnnotatorFactory(), study)
    _adaptive(study)
    _rank(study, who, images[::-1])
    services.assignment_claim(annotator=who, study=study)  # participation
    with CaptureQueriesContext(connection) as claim:
        leases = services.assignment_claim(annotator=who, study=study, hold=3)
    statements = [
        q["sql"] for q in claim.captured_queries if "SAVEPOINT" not in q["sql"]
    ]
    assert [q.split("(")[0] for q in statements] == ["SELECT * FROM palate_claim"]
    assert [a.image_id for a in leases] == [im.pk for im in images[::-1][:3]]


def _scenario(settings, sql: bool):
    """Two annotators under adaptive with rankings, claims with hold 2, ratings,
    a skip, a lease that runs out: the rows they leave, images named by their
    position."""
    settings.PALATE_SQL_ENGINE = sql
    study = StudyFactory(raters_per_image=2, quota_per_annotator=5, lease_seconds=60)
    images = make_images(study, 6, start=300 if sql else 400)
    index = {img.pk: n for n, img in enumerate(images)}
    for img, n in index.items():
        Image.objects.filter(pk=img).update(shuffle=(n * 7919) % 10007)
    people = [join(AnnotatorFactory(), study) for _ in range(2)]
    _adaptive(study, warmup=1, band=1)
    _rank(study, people[0], [images[i] for i in (5, 3, 1)])
    _rank(study, people[1], [images[i] for i in (2, 5, 4, 0)])
    t0 = timezone.now().replace(microsecond=0)
    step = 0

    def claim(who, hold, at):
        nonlocal step
        step += 1
        services.engine_seed(seed=step)
        return services.assignment_claim(
            annotator=who, study=study, hold=hold, now=t0 + at
        )

    a, b = people
    for n in range(4):
        for who in (a, b):
            got = claim(who, 2, timedelta(seconds=10 * n))
            if not got:
                continue
            if n == 2 and who is b:
                services.assignment_skip(
                    assignment_id=got[0].pk,
                    annotator=who,
                    now=t0 + timedelta(seconds=1),
                )
                continue
            services.rating_submit(
                assignment_id=got[0].pk,
                annotator=who,
                score=1 + n,
                now=t0 + timedelta(seconds=10 * n + 1),
            )
    return sorted(
        (
            people.index(x.annotator),
            index[x.image_id],
            x.status,
            x.dealt_by,
            x.dealt_rank,
            x.dealt_information,
        )
        for x in Assignment.objects.filter(study=study).select_related("annotator")
    )


@pytest.mark.postgres
def test_sql_and_python_paths_deal_adaptive_alike(settings):
    by_sql = _scenario(settings, sql=True)
    by_python = _scenario(settings, sql=False)
    assert by_sql == by_python
    assert {row[3] for row in by_sql} == {"adaptive", "fullest-first"}


@pytest.mark.parametrize("sql", PATHS)
def test_small_adaptive_study_runs_to_the_end(settings, sql):
    """Every image ends at exactly its target, nobody rates an image twice and
    nothing starves, with rankings that all want the same few images."""
    settings.PALATE_SQL_ENGINE = sql
    study = StudyFactory(raters_per_image=3, quota_per_annotator=12)
    images = make_images(study, 12)
    people = [join(AnnotatorFactory(), study) for _ in range(5)]
    _adaptive(study, warmup=2, band=1)
    rng = random.Random(7)
    for who in people:
        # Everyone prefers the same first four images, then a private order.
        rest = images[4:]
        rng.shuffle(rest)
        _rank(study, who, images[:4] + rest[:5])
    for _ in range(40):
        progressed = False
        for who in people:
            if _claim_rate(who, study, score=rng.randint(1, 7)):
                progressed = True
        if not progressed:
            break
    assert_exact(study, 3)
    assert Rating.objects.filter(study=study).count() == 12 * 3
    dealt = set(
        Assignment.objects.filter(study=study).values_list("dealt_by", flat=True)
    )
    assert dealt == {"adaptive", "fullest-first"}


def test_policy_is_validated_and_bad_values_change_nothing():
    study = StudyFactory()
    for kwargs in (
        {"policy": "smartest"},
        {"policy": "adaptive", "warmup": -1},
        {"policy": "adaptive", "band": 1001},
        {"policy": "adaptive", "warmup": "5"},
    ):
        with pytest.raises(InvalidInput):
            dealing_policy_set(study=study, **kwargs)
    study.refresh_from_db()
    assert (study.dealing_policy, study.dealing_warmup, study.dealing_band) == (
        "fullest-first",
        10,
        2,
    )
    dealing_policy_set(study=study, policy="adaptive", warmup=3, band=0)
    study = Study.objects.get(pk=study.pk)
    assert (study.dealing_policy, study.dealing_warmup, study.dealing_band) == (
        "adaptive",
        3,
        0,
    )


def test_a_ranking_names_an_image_once():
    study = StudyFactory()
    images = make_images(study, 2)
    who = join(AnnotatorFactory(), study)
    _rank(study, who, images)
    with pytest.raises(InvalidInput):
        dealing_ranking_replace(
            study_id=study.pk,
            annotator_id=who.pk,
            ranked=[(images[0].pk, 1.0), (images[0].pk, 0.5)],
            uncertainty=None,
            version_id=None,
        )
    assert DealingRank.objects.filter(annotator=who).count() == 2  # unchanged


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_32_threads_fill_every_image_exactly_under_adaptive_on_postgres():
    study, stats, errors = run_crowd(
        n_images=200,
        n_annotators=48,
        n_threads=32,
        raters=15,
        lease_seconds=5,
        deadline_s=240,
        policy="adaptive",
    )
    assert not errors, errors[:5]
    assert stats["abandoned"] > 0 and stats["retry"] > 0, stats
    assert stats["created"] + stats["late_accepted"] == 200 * 15, stats
    assert_exact(study, 15)
    # Each annotator ranked half the images: a good share dealt adaptively.
    assert Assignment.objects.filter(study=study, dealt_by="adaptive").count() > 600


@pytest.mark.sqlite_only
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_8_threads_fill_every_image_exactly_under_adaptive_on_sqlite():
    study, stats, errors = run_crowd(
        n_images=40,
        n_annotators=16,
        n_threads=8,
        raters=5,
        lease_seconds=5,
        deadline_s=180,
        policy="adaptive",
    )
    assert not errors, errors[:5]
    assert stats["created"] + stats["late_accepted"] == 40 * 5, stats
    assert_exact(study, 5)
    assert Assignment.objects.filter(study=study, dealt_by="adaptive").count() > 50
