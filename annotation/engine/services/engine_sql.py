"""The engine's common path as one round trip to PostgreSQL.

``palate_claim`` and ``palate_submit`` (their current text, and their
helpers', in ``annotation/engine/sql/<function>.sql``; migrations install frozen
copies of those files, see docs/architecture.md "The engine's SQL") do what
``engine.assignment_claim`` and ``engine.rating_submit`` do on their common path
(the submit with quality control's bookkeeping, ``quality.rating_recorded``),
with the same locks, conditional updates and rows, in one statement each.
Anything else comes back as ``NEEDS_PYTHON_ENGINE`` before they have changed
anything the Python path would not also change, and the caller then runs the
Python path, never the function again (in a transaction of its own: the call
itself runs in ``one_statement()``): errors, retries and rare cases keep exactly
one implementation.

The functions can also authenticate a DRF token themselves (``token=``), so the
hot API views make one query per request (``annotation.engine.api.hot``);
``UNKNOWN_TOKEN_OR_STUDY`` then means "no active annotator behind this token, or
no such study": let the DRF view answer.

SQLite has no functions: ``enabled()`` is False there and the Python path runs.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from annotation.engine.services.dealing import ADAPTIVE, dealing_refresh_ask
from annotation.models import Assignment, Image, Rating
from annotation.quality.services.quality import quality_police_after_commit
from core.validation import BIGINT_MAX

# The functions' answers (their ``outcome`` column) besides ok / none / created.
NEEDS_PYTHON_ENGINE = "slow"  # an uncommon case: run engine.py's path instead
UNKNOWN_TOKEN_OR_STUDY = "auth"  # the DRF view answers (401/403/404)

_CLAIM = "SELECT * FROM palate_claim(%s, %s, %s, %s, %s, %s::int[], %s)"
_SUBMIT = "SELECT * FROM palate_submit(%s, %s, %s, %s, %s, %s)"
_SUBMIT_NEXT = "SELECT * FROM palate_submit_next(%s, %s, %s, %s, %s, %s, %s::int[])"
_IMAGE_FIELDS = ["id", "file", "width", "height"]


class NotOneStatement(RuntimeError):
    """A call that must be one statement ran a second one."""


@contextmanager
def one_statement(*, savepoint: bool = True):
    """What a call runs in: nothing of its own in autocommit (the statement is
    its own transaction: no BEGIN and COMMIT round trips); inside a caller's
    transaction a savepoint (an error then leaves that transaction usable), or
    none where the caller's transaction is the request's own.

    With ``PALATE_CHECK_ONE_STATEMENT`` (tests, DEBUG) every statement run in
    the block is counted and a second one raises ``NotOneStatement``: the
    promise "one round trip per request" is checked, not just stated."""
    atomic = (
        transaction.atomic(savepoint=savepoint)
        if connection.in_atomic_block
        else nullcontext()
    )
    if not settings.PALATE_CHECK_ONE_STATEMENT:
        with atomic:
            yield
        return
    seen: list[str] = []

    def count(execute, sql, params, many, context):
        seen.append(sql)
        if len(seen) > 1:
            raise NotOneStatement(f"a second statement in one_statement(): {seen}")
        return execute(sql, params, many, context)

    # The savepoint (if any) is outside the count: it is the caller's.
    with atomic, connection.execute_wrapper(count):
        yield


def enabled() -> bool:
    """Whether the SQL path is installed and wanted (``PALATE_SQL_ENGINE``)."""
    return connection.vendor == "postgresql" and settings.PALATE_SQL_ENGINE


def claim(
    *,
    study_id: int,
    hold: int,
    now: datetime,
    starts: list[int],
    annotator_id: int | None = None,
    token: str | None = None,
) -> tuple[str, int | None, list[Assignment]]:
    """(outcome, annotator id, leases): ``ok`` with the leases, ``none`` when
    nothing is left, ``NEEDS_PYTHON_ENGINE`` or ``UNKNOWN_TOKEN_OR_STUDY`` (see
    the module docstring)."""
    outcome, annotator_id, leases, _ = _claim(
        study_id, hold, now, starts, annotator_id, token, page=False
    )
    return outcome, annotator_id, leases


def claim_page(
    *, study_id: int, hold: int, now: datetime, starts: list[int], annotator_id
) -> tuple[str, list[Assignment], tuple[int, int, bool] | None]:
    """The rating page's claim: (outcome, leases, (rated, images in the study,
    an uncounted item is due)). ``NEEDS_PYTHON_ENGINE`` also when the page
    would send the annotator elsewhere first (not started, finished: migration 0012)."""
    outcome, _, leases, page = _claim(
        study_id, hold, now, starts, annotator_id, None, page=True
    )
    return outcome, leases, page


def claim_with_progress(
    *, study_id: int, hold: int, now: datetime, starts: list[int], token: str
) -> tuple[str, int | None, list[tuple], tuple[int, int, bool] | None]:
    """The API's claim with what dealing an uncounted item needs (``rated``, the
    images in the study, whether an item is due), as ``claim_page`` answers it,
    for the annotator behind ``token``: the API deals checks and repeats on the
    rating page's schedule. ``NEEDS_PYTHON_ENGINE`` also for an annotator who
    finished (the Python path then answers); one not started yet is started here,
    as the Python path would (the API has no instructions page: migration 0031).

    The leases come as the function's rows, not models (building two model
    instances was about 4% of the hot claim's CPU, issue 29): ``lease_row``
    reads one, ``leases_of`` makes the models where a caller needs them."""
    # The hot view runs in autocommit: the statement is its own transaction.
    return _claim_rows(
        study_id, hold, now, starts, None, token, page=True, savepoint=False
    )


class LeaseRow(NamedTuple):
    id: int
    image_id: int
    width: int
    height: int
    leased_at: datetime
    expires_at: datetime


def lease_row(row: tuple) -> LeaseRow:
    """One lease of ``claim_with_progress``'s rows."""
    return LeaseRow(row[2], row[3], row[5], row[6], row[7], row[8])


def _claim_rows(study_id, hold, now, starts, annotator_id, token, *, page, savepoint):
    if not 0 < study_id <= BIGINT_MAX:
        # No such row; the Python path says so.
        return NEEDS_PYTHON_ENGINE, None, [], None
    # One random starting point per fill level tried (engine.starts_draw);
    # beyond them the function derives more as engine.Starts does.
    params = [annotator_id, token, study_id, hold, now, starts, page]
    with one_statement(savepoint=savepoint), connection.cursor() as cursor:
        cursor.execute(_CLAIM, params)
        rows = cursor.fetchall()
    outcome, annotator_id = rows[0][0], rows[0][1]
    extras = tuple(rows[0][10:13]) if page and outcome != NEEDS_PYTHON_ENGINE else None
    if outcome != "ok":
        return outcome, annotator_id, [], extras
    return outcome, annotator_id, rows, extras


def _claim(study_id, hold, now, starts, annotator_id, token, *, page, savepoint=True):
    outcome, annotator_id, rows, extras = _claim_rows(
        study_id, hold, now, starts, annotator_id, token, page=page, savepoint=savepoint
    )
    return outcome, annotator_id, leases_of(study_id, rows), extras


def leases_of(study_id: int, rows: list[tuple]) -> list[Assignment]:
    """The leases of the function's rows as ``Assignment`` models, each with
    its image (file and size) attached."""
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
    return leases


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
    savepoint: bool = True,
) -> tuple[str, Rating | None]:
    """(``created``, the new rating), or (``NEEDS_PYTHON_ENGINE`` or
    ``UNKNOWN_TOKEN_OR_STUDY``, None).

    The function also does quality control's bookkeeping of the rating
    (``quality.rating_recorded``, migration ``0011_submit_quality_sql``); an
    automatic pause it calls for runs after commit, as in Python."""
    if not 0 < assignment_id <= BIGINT_MAX:
        return NEEDS_PYTHON_ENGINE, None
    created = timezone.now()
    with one_statement(savepoint=savepoint), connection.cursor() as cursor:
        cursor.execute(
            _SUBMIT, [annotator_id, token, assignment_id, score, now, created]
        )
        row = cursor.fetchone()
    if not _recorded(row):
        return row[0], None
    _, annotator_pk, pk, study_id, image_id, ms, created_at, split, *_ = row
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
    return row[0], rating


def _recorded(row: tuple) -> bool:
    """Whether ``palate_submit``'s row (its first ten columns) says the rating
    was created; if so, the after-commit work it asks for is scheduled."""
    outcome, annotator_pk, _, study_id, *_, police, dealing = row[:10]
    if outcome != "created":
        return False
    if police:
        quality_police_after_commit(annotator_id=annotator_pk, study_id=study_id)
    if dealing == ADAPTIVE:  # the function read the study's policy
        dealing_refresh_ask(study_id=study_id, annotator_id=annotator_pk)
    return True


class Recorded(NamedTuple):
    """What the API answers of a rating ``submit_next`` created (building a
    ``Rating`` model was about 5% of the request's CPU)."""

    study_id: int
    score: int
    time_on_item_ms: int
    created_at: datetime


class SubmitNext(NamedTuple):
    """``submit_next``'s answer: the submit's outcome and rating (as ``submit``
    answers them) and, when the claim ran, its outcome, rows and page extras
    (as ``claim_with_progress`` answers them). ``claim`` None: it did not run."""

    outcome: str
    annotator_id: int | None
    rating: Recorded | None
    claim: str | None
    rows: list[tuple]
    page: tuple[int, int, bool] | None


def submit_next(
    *, token: str, assignment_id: int, score: int, now: datetime, starts: list[int]
) -> SubmitNext:
    """Rate and take the next (``?next=1``): ``palate_submit`` then, when it
    created the rating, ``palate_claim`` for the same annotator in the rating's
    study, in one statement (``palate_submit_next``, migration 0029) and so one
    transaction and one commit. The claim does not run when the submit needs
    the Python engine, or when quality control pauses the annotator after this
    rating (the pause runs first, after commit; then the Python claim refuses,
    as a second request would be refused)."""
    if not 0 < assignment_id <= BIGINT_MAX:
        return SubmitNext(NEEDS_PYTHON_ENGINE, None, None, None, [], None)
    created = timezone.now()
    # The hot view runs in autocommit: the statement is its own transaction.
    with one_statement(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            _SUBMIT_NEXT, [None, token, assignment_id, score, now, created, starts]
        )
        row = cursor.fetchone()
    rating = Recorded(row[3], score, row[5], row[6]) if _recorded(row) else None
    claim = row[10]
    if rating is None or claim is None:
        return SubmitNext(row[0], row[1], rating, None, [], None)
    # The claim's columns in palate_claim's own layout (lease_row, leases_of).
    lease = (claim, row[1], *row[11:22])
    page = tuple(row[19:22]) if claim != NEEDS_PYTHON_ENGINE else None
    return SubmitNext(
        row[0], row[1], rating, claim, [lease] if claim == "ok" else [], page
    )
