"""What an annotator is shown, one shape for every kind of item.

A counted image (an ``Assignment``) and an uncounted stream item (attention
check, repeat, blind item: ``StreamItem``) reach the browser and the API as the
same ``Shown``: opaque tokens (``annotation.engine.item_tokens``), the picture's size,
a status and a lease window. Answering and skipping go through one token-keyed
entry (``item_answer``, ``item_skip``) that answers alike for every kind, with
the same messages, so neither the URLs, the page nor the JSON tells a check or a
repeat from a counted image. The kind is known only here and in the database
(and the export).

Both the rating page and the API deal with ``items_deal``: the same schedule.
An uncounted item is due once at least one counted rating was made after its
``due_after`` (``due_after < rated``), so the item that comes after the one on
screen is already known when the page is drawn, and the page preloads it
whatever its kind.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from django.utils import timezone

from annotation.engine.item_tokens import (
    ASSIGNMENT,
    IMAGE,
    ITEM,
    MEDIA,
    STREAM,
    item_resolve,
    item_token,
)
from annotation.engine.services.engine import assignment_claim
from annotation.engine.services.ratings import assignment_skip, rating_submit
from annotation.models import Annotator, Assignment, Image, Rating, StreamItem, Study
from annotation.quality.services.quality import stream_item_answer, stream_item_skip
from core.exceptions import AnnotatorNotActive, NotFound, PalateError, StudyNotOpen

_STATUS = {
    StreamItem.Status.PENDING: Assignment.Status.LEASED,
    StreamItem.Status.ANSWERED: Assignment.Status.SUBMITTED,
    StreamItem.Status.SKIPPED: Assignment.Status.SKIPPED,
}


class Shown(NamedTuple):
    """One item as a client sees it."""

    token: str  # names it in the rate and skip URLs
    media_token: str  # names its picture
    study_id: int
    width: int
    height: int
    status: str
    leased_at: datetime
    expires_at: datetime


class Answer(NamedTuple):
    token: str
    study_id: int
    score: int
    time_on_item_ms: int | None
    created_at: datetime
    created: bool


def shown_lease_row(study_id: int, lease) -> Shown:
    """``shown_lease`` of a lease read as ``engine_sql.LeaseRow`` (no model)."""
    return _shown_assignment(
        lease.id,
        study_id,
        lease.width,
        lease.height,
        Assignment.Status.LEASED,
        lease.leased_at,
        lease.expires_at,
    )


def _shown_assignment(pk, study_id, width, height, status, leased_at, expires_at):
    return Shown(
        item_token(kind=ASSIGNMENT, pk=pk),
        item_token(kind=ASSIGNMENT, pk=pk, purpose=MEDIA),
        study_id,
        width,
        height,
        status,
        leased_at,
        expires_at,
    )


def shown_lease(lease: Assignment) -> Shown:
    return _shown_assignment(
        lease.pk,
        lease.study_id,
        lease.image.width,
        lease.image.height,
        lease.status,
        lease.leased_at,
        lease.expires_at,
    )


def shown_stream(
    item: StreamItem, study: Study, lease: Assignment | None = None
) -> Shown:
    """``lease``: the counted image held behind the item, whose lease window the
    item shows (the image after an item keeps its earlier window, so the item
    must show one like it too: a fresh window alone would mark it)."""
    picture = item.check_item if item.check_item_id else item.image
    start = item.shown_at or item.created_at
    window = (start, start + timedelta(seconds=study.lease_seconds))
    if lease is not None:
        window = (lease.leased_at, lease.expires_at)
    return Shown(
        item_token(kind=b"q", pk=item.pk),
        item_token(kind=b"q", pk=item.pk, purpose=MEDIA),
        item.study_id,
        picture.width,
        picture.height,
        _STATUS[item.status],
        *window,
    )


def _pending(annotator_id: int, study: Study, rated: int, finished: bool) -> list:
    qs = StreamItem.objects.filter(
        annotator_id=annotator_id, study=study, status=StreamItem.Status.PENDING
    )
    if not finished:
        qs = qs.filter(due_after__lte=rated)  # due now, or after the next rating
    return list(
        qs.select_related("check_item", "image").order_by("due_after", "pk")[:2]
    )


def _mark_shown(item: StreamItem, now: datetime) -> None:
    if item.shown_at is None:
        item.shown_at = now
        StreamItem.objects.filter(pk=item.pk, shown_at__isnull=True).update(
            shown_at=now
        )


def items_deal(
    *,
    annotator_id: int,
    study: Study,
    leases: list[Assignment],
    rated: int,
    item_due: bool = True,
    now: datetime | None = None,
) -> tuple[Shown | None, Shown | None]:
    """(the item to show now, the one that follows it), either None.

    ``leases``: the annotator's live leases, oldest first; ``item_due``: False
    when it is known that no stream item is due now or after the next rating
    (the rating page's one-statement claim says so), which spares a query. With
    no lease left, every pending item is shown before the end."""
    finished = not leases
    due = item_due or finished  # at the end, any pending item, due or not
    items = _pending(annotator_id, study, rated, finished) if due else []
    due = [i for i in items if finished or i.due_after < rated]
    if due:
        _mark_shown(due[0], now or timezone.now())
        after = due[1] if len(due) > 1 else (leases[0] if leases else None)
        behind = leases[0] if leases else None
        return shown_stream(due[0], study, behind), _shown(after, study)
    if finished:
        return None, None
    after = items[0] if items else (leases[1] if len(leases) > 1 else None)
    return shown_lease(leases[0]), _shown(after, study)


def _shown(thing, study: Study) -> Shown | None:
    if thing is None:
        return None
    if isinstance(thing, StreamItem):
        return shown_stream(thing, study)
    return shown_lease(thing)


def item_next(
    *,
    annotator: Annotator,
    study: Study,
    now: datetime | None = None,
    sql_first: bool = True,
) -> Shown | None:
    """The API's next item: one lease held, dealt on the rating page's schedule
    (the hot API view does the same from its one-statement claim, and calls
    this with ``sql_first=False`` when that statement sent it here)."""
    leases = assignment_claim(
        annotator=annotator, study=study, now=now, sql_first=sql_first
    )
    rated = Rating.objects.filter(annotator=annotator, study=study).count()
    shown, _ = items_deal(
        annotator_id=annotator.pk, study=study, leases=leases, rated=rated, now=now
    )
    return shown


def item_next_after_answer(
    *, annotator: Annotator, study_id: int, sql_first: bool = True
) -> tuple[Shown | None, PalateError | None]:
    """Rate-and-next's claim (``?next=1``), made once the rating is recorded:
    ``item_next`` in the rating's study, and its refusal (a pause that rating
    brought on, say) returned beside the rating, not raised instead of it, so
    the client learns both what was recorded and why nothing follows."""
    try:
        study = Study.objects.get(pk=study_id)
        return item_next(annotator=annotator, study=study, sql_first=sql_first), None
    except PalateError as exc:
        return None, exc


def _check_can_answer(annotator: Annotator, study_id: int) -> None:
    """The engine's refusals for an uncounted item (which has no lease)."""
    status = Annotator.objects.filter(pk=annotator.pk).values_list("status")
    study = Study.objects.filter(pk=study_id).values_list("status", "name")
    status, (study_status, name) = status.get()[0], study.get()
    if status != Annotator.Status.ACTIVE:
        raise AnnotatorNotActive(
            {
                "paused": "Your account is paused. Please contact the researchers.",
                "banned": "Your account has been blocked from this platform.",
                "excluded": "Your account has been excluded from this study.",
            }.get(status, "Your account is not active.")
        )
    if study_status != Study.Status.OPEN:
        raise StudyNotOpen(f"The study '{name}' is not open for ratings.")


def item_answer(
    *, token: str, annotator: Annotator, score, sql_first: bool = True
) -> Answer:
    """Record the score for the item ``token`` names, whatever its kind
    (``sql_first`` as in ``item_next``)."""
    kind, pk = item_resolve(token, purpose=ITEM)
    try:
        if kind == ASSIGNMENT:
            rating, created = rating_submit(
                assignment_id=pk, annotator=annotator, score=score, sql_first=sql_first
            )
            return Answer(
                token,
                rating.study_id,
                rating.score,
                rating.time_on_item_ms,
                rating.created_at,
                created,
            )
        study_id = (
            StreamItem.objects.filter(pk=pk, annotator=annotator)
            .values_list("study_id", flat=True)
            .first()
        )
        if study_id is None:
            raise NotFound("No such item.")
        _check_can_answer(annotator, study_id)
        item, created = stream_item_answer(item_id=pk, annotator=annotator, score=score)
    except NotFound:
        raise NotFound("No such item.") from None
    return Answer(
        token,
        item.study_id,
        item.score,
        item.time_on_item_ms,
        item.answered_at,
        created,
    )


def item_skip(*, token: str, annotator: Annotator) -> Shown:
    """Skip the item ``token`` names; it is never shown to this annotator again."""
    kind, pk = item_resolve(token, purpose=ITEM)
    try:
        if kind == ASSIGNMENT:
            assignment = assignment_skip(assignment_id=pk, annotator=annotator)
            return shown_lease(assignment)
        item = stream_item_skip(item_id=pk, annotator=annotator)
    except NotFound:
        raise NotFound("No such item.") from None
    return shown_stream(item, Study.objects.get(pk=item.study_id))


def item_timed_out(*, token: str, annotator: Annotator) -> bool:
    """Whether the item's lease ran out (only a counted image's can)."""
    kind, pk = item_resolve(token, purpose=ITEM)
    return kind == ASSIGNMENT and (
        Assignment.objects.filter(
            pk=pk, annotator=annotator, status=Assignment.Status.EXPIRED
        ).exists()
    )


def item_picture(*, media_token: str):
    """The stored file of the picture ``media_token`` names (a FieldFile)."""
    kind, pk = item_resolve(
        media_token, purpose=MEDIA, kinds=(ASSIGNMENT, STREAM, IMAGE)
    )
    if kind == IMAGE:  # a picture shown outside the stream (the taste portrait)
        picture = Image.objects.filter(pk=pk).first()
    elif kind == ASSIGNMENT:
        lease = Assignment.objects.select_related("image").filter(pk=pk).first()
        picture = lease.image if lease else None
    else:
        item = (
            StreamItem.objects.select_related("check_item", "image")
            .filter(pk=pk)
            .first()
        )
        picture = None
        if item is not None:
            picture = item.check_item if item.check_item_id else item.image
    if picture is None:
        raise NotFound("No such item.")
    return picture.file
