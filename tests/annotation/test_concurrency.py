"""Many annotators at once: every image ends with exactly its target of ratings.

Threads each open their own database connection and drive the real services.
Some leases are abandoned (they expire mid-run and return their slot), some are
submitted late (after expiry), and the same annotator is sometimes driven by two
threads at once (a double-clicking user, a retried request).
"""

import random
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from annotation import services
from annotation.models import Assignment, Image, Rating
from core.exceptions import Conflict
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images


def score_for(annotator_id: int, image_id: int) -> int:
    return 1 + (annotator_id * 7 + image_id * 13) % 7


def run_crowd(
    *,
    n_images,
    n_annotators,
    n_threads,
    raters,
    lease_seconds,
    deadline_s,
    policy="fullest-first",
):
    study = StudyFactory(
        raters_per_image=raters,
        quota_per_annotator=n_images,
        lease_seconds=lease_seconds,
    )
    images = make_images(study, n_images)
    annotators = [join(AnnotatorFactory(), study) for _ in range(n_annotators)]
    if policy == "adaptive":
        _rank_randomly(study, annotators, images)
    stats = Counter()
    stats_lock = threading.Lock()
    errors = []

    def count(key):
        with stats_lock:
            stats[key] += 1

    late = []  # (annotator, assignment id, abandoned at)
    late_lock = threading.Lock()
    done = threading.Event()
    stop_at = time.monotonic() + deadline_s

    def worker(seed):
        rng = random.Random(seed)
        try:
            while not done.is_set() and time.monotonic() < stop_at:
                annotator = rng.choice(annotators)
                leases = services.assignment_claim(annotator=annotator, study=study)
                if not leases:
                    count("empty")
                    if not Image.objects.filter(
                        study=study, rating_count__lt=raters
                    ).exists():
                        done.set()
                    continue
                a = leases[0]
                roll = rng.random()
                if roll < 0.04:
                    # Walk away: the lease must expire and give its slot back.
                    count("abandoned")
                    with late_lock:
                        late.append((annotator, a.pk, time.monotonic()))
                    continue
                if roll < 0.08:
                    with late_lock:
                        due = [
                            x for x in late if time.monotonic() - x[2] > lease_seconds
                        ]
                        if due:
                            late.remove(due[0])
                    if due:
                        ann, pk, _ = due[0]
                        try:
                            image_id = Assignment.objects.get(pk=pk).image_id
                            _, created = services.rating_submit(
                                assignment_id=pk,
                                annotator=ann,
                                score=score_for(ann.pk, image_id),
                            )
                            count("late_accepted" if created else "repeat")
                        except Conflict:
                            count("late_refused")
                try:
                    _, created = services.rating_submit(
                        assignment_id=a.pk,
                        annotator=annotator,
                        score=score_for(annotator.pk, a.image_id),
                    )
                    count("created" if created else "repeat")
                except Conflict:
                    # Another thread driving the same annotator rated it first and
                    # this lease expired meanwhile: refused, nothing written.
                    count("conflict")
                if rng.random() < 0.05:  # a network retry of the same submission
                    _, created = services.rating_submit(
                        assignment_id=a.pk,
                        annotator=annotator,
                        score=score_for(annotator.pk, a.image_id),
                    )
                    assert not created
                    count("retry")
        except Exception as exc:  # surfaced by the main thread's assertion
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return study, stats, errors


def _rank_randomly(study, annotators, images):
    """Adaptive dealing with a random ranking of half the images per annotator
    (the others are dealt fullest-first): tests/annotation/test_dealing.py."""
    from annotation.engine.services.dealing import (
        dealing_policy_set,
        dealing_ranking_replace,
    )

    dealing_policy_set(study=study, policy="adaptive", warmup=1, band=3)
    rng = random.Random(27)
    for who in annotators:
        mine = rng.sample(images, len(images) // 2)
        dealing_ranking_replace(
            study_id=study.pk,
            annotator_id=who.pk,
            ranked=[(im.pk, rng.random()) for im in mine],
            uncertainty=None,
            version_id=None,
        )


def assert_exact(study, raters):
    services.lease_expire(study_id=study.pk, now=timezone.now() + timedelta(days=1))
    per_image = dict(
        Rating.objects.filter(study=study, is_valid=True)
        .values_list("image_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    images = list(Image.objects.filter(study=study))
    assert all(per_image.get(i.pk, 0) == raters for i in images), Counter(
        per_image.get(i.pk, 0) for i in images
    )
    assert all(i.rating_count == raters and i.lease_count == 0 for i in images)
    pairs = Rating.objects.values("image_id", "annotator_id").annotate(n=Count("pk"))
    assert not pairs.filter(n__gt=1).exists()
    assert not Assignment.objects.filter(study=study, status="leased").exists()
    # Every submitted assignment has exactly one rating and vice versa.
    assert (
        Assignment.objects.filter(study=study, status="submitted").count()
        == Rating.objects.filter(study=study).count()
    )


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_32_threads_fill_every_image_exactly_on_postgres():
    study, stats, errors = run_crowd(
        n_images=200,
        n_annotators=48,
        n_threads=32,
        raters=15,
        lease_seconds=5,
        deadline_s=240,
    )
    assert not errors, errors[:5]
    assert stats["abandoned"] > 0 and stats["retry"] > 0, stats
    assert stats["created"] + stats["late_accepted"] == 200 * 15, stats
    assert_exact(study, 15)


@pytest.mark.sqlite_only
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_8_threads_fill_every_image_exactly_on_sqlite():
    study, stats, errors = run_crowd(
        n_images=40,
        n_annotators=16,
        n_threads=8,
        raters=5,
        lease_seconds=5,
        deadline_s=180,
    )
    assert not errors, errors[:5]
    assert stats["abandoned"] > 0, stats
    assert stats["created"] + stats["late_accepted"] == 40 * 5, stats
    assert_exact(study, 5)
