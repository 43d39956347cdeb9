"""The engine's common path as one round trip to PostgreSQL.

``palate_claim`` and ``palate_submit`` (their current text, and their
helpers', in ``annotation/engine/sql/<function>.sql``; migrations install frozen
copies of those files, see docs/architecture.md "The engine's SQL") do what
``engine.assignment_claim`` and ``engine.rating_submit`` do on their common path
(the submit with quality control's bookkeeping, ``quality.rating_recorded``),
with the same locks, conditional updates and rows, in one statement each.
Anything else comes back as ``SLOW`` before they have changed anything the
Python path would not also change, and the caller then runs the Python path (in
a transaction of its own: the call itself runs in ``one_statement()``): errors,
retries and rare cases keep exactly one implementation.

The functions can also authenticate a DRF token themselves (``token=``), so the
hot API views make one query per request (``annotation.engine.api.hot``); ``AUTH`` then
means "no active annotator behind this token, or no such study": let the DRF view
answer.

SQLite has no functions: ``enabled()`` is False there and the Python path runs.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from annotation.models import Assignment, Image, Rating
from annotation.quality.services.quality import quality_police_after_commit
from core.validation import BIGINT_MAX

SLOW = "slow"
AUTH = "auth"

_CLAIM = "SELECT * FROM palate_claim(%s, %s, %s, %s, %s, %s::int[], %s)"
_SUBMIT = "SELECT * FROM palate_submit(%s, %s, %s, %s, %s, %s)"
_IMAGE_FIELDS = ["id", "file", "width", "height"]


def one_statement(*, savepoint: bool = True):
    """What a call runs in: nothing of its own in autocommit (the statement is
    its own transaction: no BEGIN and COMMIT round trips); inside a caller's
    transaction a savepoint (an error then leaves that transaction usable), or
    none where the caller's transaction is the request's own."""
    if not connection.in_atomic_block:
        return nullcontext()
    return transaction.atomic(savepoint=savepoint)


def enabled() -> bool:
    """Whether the SQL path is installed and wanted (``PALATE_SQL_ENGINE``)."""
    return connection.vendor == "postgresql" and settings.PALATE_SQL_ENGINE


def claim(
    *,
    study_id: int,
    hold: int,
    now: datetime,
    dealer: random.Random,
    annotator_id: int | None = None,
    token: str | None = None,
) -> tuple[str, int | None, list[Assignment]]:
    """(outcome, annotator id, leases): ``ok`` with the leases, ``none`` when
    nothing is left, ``SLOW`` or ``AUTH`` (see the module docstring)."""
    outcome, annotator_id, leases, _ = _claim(
        study_id, hold, now, dealer, annotator_id, token, page=False
    )
    return outcome, annotator_id, leases


def claim_page(
    *, study_id: int, hold: int, now: datetime, dealer: random.Random, annotator_id
) -> tuple[str, list[Assignment], tuple[int, int, bool] | None]:
    """The rating page's claim: (outcome, leases, (rated, images in the study,
    an uncounted item is due)). ``SLOW`` also when the page would send the
    annotator elsewhere first (not started, finished: migration 0012)."""
    outcome, _, leases, page = _claim(
        study_id, hold, now, dealer, annotator_id, None, page=True
    )
    return outcome, leases, page


def claim_with_progress(
    *, study_id: int, hold: int, now: datetime, dealer: random.Random, token: str
) -> tuple[str, int | None, list[Assignment], tuple[int, int, bool] | None]:
    """The API's claim with what dealing an uncounted item needs (``rated``, the
    images in the study, whether an item is due), as ``claim_page`` answers it,
    for the annotator behind ``token``: the API deals checks and repeats on the
    rating page's schedule. ``SLOW`` also for an annotator not started yet or
    finished (the Python path then answers)."""
    return _claim(study_id, hold, now, dealer, None, token, page=True)


def _claim(study_id, hold, now, dealer, annotator_id, token, *, page: bool):
    if not 0 < study_id <= BIGINT_MAX:
        return SLOW, None, [], None  # no such row; the Python path says so
    # One random starting point per level tried; a claim rarely needs more than
    # one per lease, and the function draws its own beyond these.
    starts = [dealer.randrange(2**31) for _ in range(2 * hold + 2)]
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, [annotator_id, token, study_id, hold, now, starts, page])
        rows = cursor.fetchall()
    outcome, annotator_id = rows[0][0], rows[0][1]
    extras = tuple(rows[0][10:13]) if page and outcome != SLOW else None
    if outcome != "ok":
        return outcome, annotator_id, [], extras
    leases = []
    for (
        _,
        annotator_pk,
        pk,
        image_id,
        file,
        width,
        height,
        leased,
        expires,
        shown,
        *_,
    ) in rows:
        lease = Assignment(
            pk=pk,
            study_id=study_id,
            image_id=image_id,
            annotator_id=annotator_pk,
            status=Assignment.Status.LEASED,
            leased_at=leased,
            expires_at=expires,
            shown_at=shown,
        )
        lease._state.adding = False
        lease._state.db = connection.alias
        lease.image = Image.from_db(
            connection.alias, _IMAGE_FIELDS, (image_id, file, width, height)
        )
        leases.append(lease)
    return outcome, annotator_id, leases, extras


def plain_score(score) -> bool:
    """A score the SQL path may take as is (anything else: the Python path's
    validation answers)."""
    return (
        not isinstance(score, bool) and isinstance(score, int) and -100 <= score <= 100
    )


def submit(
    *,
    assignment_id: int,
    score: int,
    now: datetime,
    annotator_id: int | None = None,
    token: str | None = None,
) -> tuple[str, Rating | None]:
    """(``created``, the new rating), or (``SLOW`` / ``AUTH``, None).

    The function also does quality control's bookkeeping of the rating
    (``quality.rating_recorded``, migration ``0011_submit_quality_sql``); an
    automatic pause it calls for runs after commit, as in Python."""
    if not 0 < assignment_id <= BIGINT_MAX:
        return SLOW, None
    created = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _SUBMIT, [annotator_id, token, assignment_id, score, now, created]
        )
        row = cursor.fetchone()
    outcome, annotator_pk, pk, study_id, image_id, ms, created_at, split, police = row
    if outcome != "created":
        return outcome, None
    if police:
        quality_police_after_commit(annotator_id=annotator_pk, study_id=study_id)
    rating = Rating(
        pk=pk,
        study_id=study_id,
        image_id=image_id,
        annotator_id=annotator_pk,
        assignment_id=assignment_id,
        score=score,
        time_on_item_ms=ms,
        is_valid=True,
        split=split,
        created_at=created_at,
    )
    rating._state.adding = False
    rating._state.db = connection.alias
    return outcome, rating
