"""Rating and skipping a counted image (``rating_submit``, ``assignment_skip``):
the SQL path first for a plain score, the Python path for the rest; the locks
are the engine's (``engine`` module docstring)."""

from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from annotation.engine.services import engine_sql
from annotation.engine.services.dealing import ADAPTIVE, dealing_refresh_ask
from annotation.engine.services.guards import (
    can_work_check,
    participation_check,
    status_lock_share,
)
from annotation.models import Annotator, Assignment, Image, Participation, Rating
from annotation.quality.services.quality import rating_recorded
from annotation.splits import split_assign
from core.exceptions import Conflict, InvalidInput, NotFound


def _locked_assignment(assignment_id: int, annotator: Annotator) -> Assignment:
    """The assignment, locked, with its study, its image and
    (``participation_status``) the annotator's status in that study, read in the
    same query."""
    part = Participation.objects.filter(
        annotator_id=OuterRef("annotator_id"), study_id=OuterRef("study_id")
    ).values("status")[:1]
    try:
        assignment = (
            Assignment.objects.select_for_update(of=("self",), no_key=True)
            .select_related("study", "image")  # the image's sha256: its split
            .annotate(participation_status=Subquery(part))
            .get(pk=assignment_id)
        )
    except Assignment.DoesNotExist:
        raise NotFound("No such assignment.") from None
    if assignment.annotator_id != annotator.pk:
        # Same answer as a missing id: assignments of others are not disclosed.
        raise NotFound("No such assignment.")
    return assignment


def rating_submit(
    *,
    assignment_id: int,
    annotator: Annotator,
    score: int,
    now: datetime | None = None,
    sql_first: bool = True,
) -> tuple[Rating, bool]:
    """Record a score for the image behind an assignment. Returns (rating, created).

    The same score again is a no-op (a network retry); another score is a Conflict.
    A lease that has expired is still accepted while the image has a free slot.
    ``sql_first`` as in ``assignment_claim``.
    """
    now = now or timezone.now()
    if sql_first and engine_sql.enabled() and engine_sql.plain_score(score):
        try:
            _, rating = engine_sql.submit(
                assignment_id=assignment_id,
                annotator_id=annotator.pk,
                score=score,
                now=now,
            )
        except IntegrityError:
            rating = None  # the Python path meets the same refusal, below
        if rating is not None:  # QC statistics and flags included
            rating.annotator = annotator
            return rating, True
    try:
        with transaction.atomic(durable=True):
            return _rating_submit(assignment_id, annotator, score, now)
    except IntegrityError:
        # Only reachable when a rating of this pair exists outside this
        # assignment (e.g. imported): the unique pair refuses it.
        raise Conflict("You already rated this image.") from None


def _rating_submit(assignment_id, annotator, score, now) -> tuple[Rating, bool]:
    status_lock_share(annotator)  # checked below, after the idempotent-retry answer
    assignment = _locked_assignment(assignment_id, annotator)
    study = assignment.study
    if isinstance(score, bool) or not isinstance(score, int):
        raise InvalidInput("score must be a whole number.")
    if not study.scale_min <= score <= study.scale_max:
        raise InvalidInput(
            f"score must be between {study.scale_min} and {study.scale_max}."
        )
    if assignment.status == Assignment.Status.SUBMITTED:
        # One assignment per (image, annotator): its rating is the only one.
        existing = Rating.objects.get(assignment=assignment)
        if existing.score == score:
            return existing, False
        raise Conflict(
            f"You already rated this image {existing.score}; ratings cannot be changed."
        )
    can_work_check(annotator, study)
    participation_check(assignment.participation_status)
    if assignment.status == Assignment.Status.SKIPPED:
        raise Conflict("You skipped this image, so it can no longer be rated.")
    if assignment.status == Assignment.Status.LEASED:
        # The lease still holds its slot (even if overdue and not yet swept).
        Image.objects.filter(pk=assignment.image_id).update(
            lease_count=F("lease_count") - 1, rating_count=F("rating_count") + 1
        )
    else:  # expired: only while the image still has room
        updated = Image.objects.filter(pk=assignment.image_id, open_slots__gt=0).update(
            rating_count=F("rating_count") + 1
        )
        if updated != 1:
            raise Conflict(
                "Your time on this image ran out and it has since received all "
                "its ratings, so this rating was not recorded."
            )
    rating = Rating.objects.create(
        study=study,
        image_id=assignment.image_id,
        annotator=annotator,
        assignment=assignment,
        score=score,
        time_on_item_ms=_elapsed_ms(assignment.shown_at or assignment.leased_at, now),
        split=split_assign(
            image_key=assignment.image.sha256, annotator_key=annotator.split_key
        ),
    )
    rating_recorded(rating=rating, study=study, now=now)  # QC statistics and flags
    if study.dealing_policy == ADAPTIVE:
        dealing_refresh_ask(study_id=study.pk, annotator_id=annotator.pk)
    assignment.status = Assignment.Status.SUBMITTED
    assignment.finished_at = now
    assignment.save(update_fields=["status", "finished_at"])
    return rating, True


def _elapsed_ms(start: datetime, end: datetime) -> int:
    return max(0, int((end - start).total_seconds() * 1000))


def assignment_skip(
    *, assignment_id: int, annotator: Annotator, now: datetime | None = None
) -> Assignment:
    """Give the image back without rating it; it is never dealt to this annotator
    again. Skipping twice is a no-op."""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        assignment = _locked_assignment(assignment_id, annotator)
        if assignment.status == Assignment.Status.SKIPPED:
            return assignment
        if assignment.status == Assignment.Status.SUBMITTED:
            raise Conflict("You already rated this image.")
        if assignment.status == Assignment.Status.LEASED:
            Image.objects.filter(pk=assignment.image_id).update(
                lease_count=F("lease_count") - 1
            )
        assignment.status = Assignment.Status.SKIPPED
        assignment.finished_at = now
        assignment.save(update_fields=["status", "finished_at"])
    return assignment
