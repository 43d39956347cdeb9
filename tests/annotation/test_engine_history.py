"""A claim's cost does not depend on how many images the annotator already had
(issue 29): an annotator far ahead of the others, who was dealt every one of
the fullest images, is dealt a new one after reading a bounded number of rows,
on both engine paths. Buffers are counted by PostgreSQL itself
(``auto_explain``, as in ``test_engine_bounded``: every statement's shared
buffers, the function's own statements included). Not rows: with tables this
small the planner may probe the annotator's assignments with a sequential scan
of two pages, which reads every row of them and only two buffers."""

import hashlib
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotation import services
from annotation.models import Assignment, Image, Rating
from tests.annotation.test_engine_bounded import (
    WINDOWS,
    Undo,
    buffers_counted,
    rolled_back,
)
from tests.factories import AnnotatorFactory, StudyFactory, join

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db,
    pytest.mark.usefixtures("engine_path"),
]


def far_ahead(history: int, untouched: int = 300):
    """A study where one annotator rated ``history`` images that nobody else
    has rated yet (all of the fullest level), and ``untouched`` images wait."""
    study = StudyFactory(raters_per_image=5, quota_per_annotator=10_000)
    images = Image.objects.bulk_create(
        Image(
            study=study,
            file=f"h/{n}.png",
            sha256=hashlib.sha256(f"{study.pk}:{n}".encode()).hexdigest(),
            width=8,
            height=8,
            target_ratings=5,
            rating_count=1 if n < history else 0,  # inserted so: no dead rows
        )
        for n in range(history + untouched)
    )
    ahead = join(AnnotatorFactory(), study)
    now = timezone.now()
    done = images[:history]
    assignments = Assignment.objects.bulk_create(
        Assignment(
            study=study,
            image=img,
            annotator=ahead,
            status=Assignment.Status.SUBMITTED,
            leased_at=now,
            expires_at=now + timedelta(minutes=5),
            finished_at=now,
        )
        for img in done
    )
    Rating.objects.bulk_create(
        Rating(
            study=study,
            image=a.image,
            annotator=ahead,
            assignment=a,
            score=3,
            split="train",
        )
        for a in assignments
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE annotation_image; ANALYZE annotation_assignment")
    return study, ahead, {i.pk for i in done}


def claim_cost(history: int) -> int:
    study, ahead, done = far_ahead(history)
    # Warm: PL/pgSQL plans a statement afresh for its first five runs (each
    # planning reads index ends, dead entries left by earlier tests included);
    # these claims are rolled back, the plans stay.
    for _ in range(6):
        try:
            with rolled_back():
                services.assignment_claim(annotator=ahead, study=study)
                raise Undo
        except Undo:
            pass
    with buffers_counted() as counted:
        (lease,) = services.assignment_claim(annotator=ahead, study=study)
    assert lease.image_id not in done
    return sum(counted)


def test_a_long_history_costs_no_more_rows_than_a_short_one():
    short, long = claim_cost(100), claim_cost(2000)
    # Reading past 2,000 dealt images would cost 6,000 buffers and more (an
    # index entry, a heap visit and a probe each); a window per level tried
    # (two levels here, each way round) costs a bounded number whatever the
    # history: about 400-1,000 here alone, up to 1,600 late in the whole suite
    # (where the first runs' planning reads index ends full of earlier tests'
    # dead entries), for both histories alike.
    assert short <= 2 * WINDOWS and long <= 2 * WINDOWS, (short, long)
    assert long <= short + 400, (short, long)
