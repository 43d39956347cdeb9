"""Closing the loop: the blind paired test, asked of the person the run was for.

``paired_test_send`` puts the base image and the optimised image into the
annotator's own rating stream as two uncounted items (annotation's stream items:
never a Rating, so no image's 15 is touched), next in line, one after the other,
in an order drawn at random. The annotator rates each like any other image and
is never told they belong together. ``paired_test_refresh`` reads the two answers
back and stores the outcome: the optimised image rated higher, the base rated
higher, or a tie (or skipped, when either was skipped).
"""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from annotation.quality import selectors as quality_selectors
from annotation.quality import services as quality_services
from core.exceptions import Conflict

from . import selectors
from .models import Optimization, PairedTest


def paired_test_send(
    *, optimization: Optimization, created_by=None, optimised_first: bool | None = None
) -> PairedTest:
    """Queue the paired test for the run's annotator. ``optimised_first`` is for
    tests; otherwise the order is drawn with ``secrets``."""
    opt = optimization
    if opt.status != Optimization.Status.DONE:
        raise Conflict("The run has not finished yet.")
    base, best = selectors.optimization_best(opt)
    if base is None or best is None or base.image_id is None or best.image_id is None:
        raise Conflict("The run has no base and optimised image to compare.")
    if base.image_id == best.image_id:
        raise Conflict("Nothing to compare: the base prompt stayed the best.")
    if optimised_first is None:
        optimised_first = bool(secrets.randbelow(2))
    with transaction.atomic(durable=True):
        Optimization.objects.select_for_update(no_key=True).get(pk=opt.pk)
        if opt.paired_tests.filter(status=PairedTest.Status.PENDING).exists():
            raise Conflict("A paired test of this run is still waiting for answers.")
        images = [base.image, best.image]
        if optimised_first:
            images.reverse()
        items = quality_services.uncounted_items_create(
            annotator=opt.annotator,
            study=opt.study,
            images=images,
            payload={"purpose": "steering paired test", "optimization": opt.pk},
        )
        first, second = (item.pk for item in items)
        return PairedTest.objects.create(
            optimization=opt,
            annotator=opt.annotator,
            base_image=base.image,
            optimised_image=best.image,
            optimised_first=optimised_first,
            base_item_id=second if optimised_first else first,
            optimised_item_id=first if optimised_first else second,
            created_by=created_by,
        )


def paired_test_refresh(*, test: PairedTest) -> PairedTest:
    """Store the outcome once both items are answered (idempotent)."""
    if test.status != PairedTest.Status.PENDING:
        return test
    answers = quality_selectors.uncounted_item_answers(
        item_ids=[test.base_item_id, test.optimised_item_id]
    )
    base, opt = answers[test.base_item_id], answers[test.optimised_item_id]
    if "skipped" in (base.status, opt.status):
        status, outcome = PairedTest.Status.SKIPPED, ""
    elif base.status == opt.status == "answered":
        status = PairedTest.Status.ANSWERED
        if opt.score > base.score:
            outcome = PairedTest.Outcome.OPTIMISED
        elif opt.score < base.score:
            outcome = PairedTest.Outcome.BASE
        else:
            outcome = PairedTest.Outcome.TIE
    else:
        return test
    with transaction.atomic(durable=True):
        test = PairedTest.objects.select_for_update(no_key=True).get(pk=test.pk)
        if test.status != PairedTest.Status.PENDING:
            return test
        test.status, test.outcome = status, outcome
        test.base_score, test.optimised_score = base.score, opt.score
        times = [t for t in (base.answered_at, opt.answered_at) if t]
        test.answered_at = max(times) if times else timezone.now()
        test.save()
    return test


def paired_tests_refresh(*, optimization: Optimization) -> list[PairedTest]:
    return [
        paired_test_refresh(test=t)
        for t in optimization.paired_tests.select_related("annotator")
    ]
