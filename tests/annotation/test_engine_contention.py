"""No false "nothing left" (issue 29): a claim answers with no lease only when
no image is open to that annotator, on both engine paths, while other
transactions hold the images it would take."""

import threading
import time

import pytest
from django.db import connection, transaction

from annotation import services
from annotation.models import Image, Rating
from tests.factories import (
    AnnotatorFactory,
    StudyFactory,
    join,
    make_images,
    rate_image,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def open_to(annotator, study) -> int:
    return (
        Image.objects.filter(study=study, open_slots__gt=0)
        .exclude(assignments__annotator=annotator)
        .count()
    )


def test_a_claim_waits_for_the_last_open_image_held_by_another_transaction(
    engine_path,
):
    """The only image open to the annotator is locked by another transaction
    (a concurrent claim, a sweep) that then lets it go unchanged: skipping it
    would say "nothing left" with an image open."""
    study = StudyFactory(raters_per_image=3)
    (image,) = make_images(study, 1)
    annotator = join(AnnotatorFactory(), study)
    locked, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                Image.objects.select_for_update(no_key=True).get(pk=image.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    threading.Timer(0.5, release.set).start()
    leases = services.assignment_claim(annotator=annotator, study=study)
    holder.join()
    assert [x.image_id for x in leases] == [image.pk]


def test_threads_contending_for_the_fullest_images_never_get_a_false_none(
    engine_path,
):
    """16 annotators on 16 threads rate a study to the end; every claim that
    answers with no lease is checked: no image may be open to that annotator
    (slots only close in this run: nothing is skipped or abandoned)."""
    study = StudyFactory(raters_per_image=12, quota_per_annotator=100)
    make_images(study, 24)
    people = [join(AnnotatorFactory(), study) for _ in range(16)]
    false_none, errors = [], []

    def work(annotator):
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                leases = services.assignment_claim(annotator=annotator, study=study)
                if not leases:
                    if n := open_to(annotator, study):
                        false_none.append(n)
                    return
                services.rating_submit(
                    assignment_id=leases[0].pk, annotator=annotator, score=3
                )
        except Exception as exc:  # surfaced by the assertion below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert false_none == []
    assert Rating.objects.filter(study=study).count() == 24 * 12


def test_a_claim_skips_an_image_another_transaction_holds(engine_path):
    """Claims never wait on each other: the fullest image, held by another
    transaction, is passed over for the next one at once (``SKIP LOCKED``)."""
    study = StudyFactory(raters_per_image=3)
    fullest, other = make_images(study, 2)
    rate_image(fullest, 1)
    annotator = join(AnnotatorFactory(), study)
    locked, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                Image.objects.select_for_update(no_key=True).get(pk=fullest.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    timer = threading.Timer(3, release.set)  # a claim that waited gets `fullest`
    timer.start()
    try:
        leases = services.assignment_claim(annotator=annotator, study=study)
        held_meanwhile = not release.is_set()
    finally:
        release.set()
        holder.join()
    assert [x.image_id for x in leases] == [other.pk]
    assert held_meanwhile
