"""The assignment engine: claim, rate, skip, expire, and status changes that
give slots back.

The engine keeps three promises under any concurrency:

* an image never holds more valid ratings plus live leases than ``target_ratings``
  (checked by the ``image_never_over_target`` constraint; every counter change is a
  conditional UPDATE);
* an annotator has at most one assignment and one rating per image (unique pairs), so
  no image is rated twice or shown again after a skip;
* expired leases give their slot back, both lazily (a claim that finds nothing sweeps
  its study) and from the periodic ``annotation.sweep_expired_leases`` task;
* no annotator who is not active gains a lease or a valid rating, nor one in a
  study they were excluded from: claim and submit read the status (and the
  participation's) under a lock that a status change or an exclusion must wait
  for (and vice versa).

Lock order (every path, admin actions and erasure included)::

    Annotator -> Participation -> Assignment -> Rating -> Image

* **Annotator.** Claim and submit take ``FOR SHARE`` (the status they check cannot
  change until they commit; one annotator's own requests do not block each other).
  Status changes and erasure take ``FOR NO KEY UPDATE``, which conflicts with
  ``FOR SHARE`` but not with the ``FOR KEY SHARE`` that every Assignment/Rating
  insert takes on its annotator: a plain ``FOR UPDATE`` there is what made an
  exclusion and an in-flight rating deadlock.
* **Participation.** ``FOR NO KEY UPDATE``: serialises one annotator's claims in a
  study (quota, hold) and nobody else's.
* **Assignment, then Rating.** A request names an assignment and its image is found
  through it, so the assignment comes first. Existing ratings are locked only by
  exclusion and erasure, after the annotator's assignments.
* **Image counters last**, in ascending id when there are several (sweeps,
  exclusions), each change a conditional UPDATE.

Inserts never wait on a row lock (a new Assignment or Rating row is nobody else's;
the unique pairs cannot collide under the locks above); they only take
``FOR KEY SHARE`` on their parents. So the two places that look out of order are
safe: the claim locks an image before inserting its assignment, but with
``SKIP LOCKED`` (it never waits on an image), and submit inserts its rating after
updating the image.

Every lock that guards an UPDATE of non-key columns is ``FOR NO KEY UPDATE``
(``select_for_update(no_key=True)``), so it never blocks the foreign-key checks of
concurrent inserts.
"""

import random
from collections import Counter
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import IntegrityError, connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from annotation.engine.services import engine_sql
from annotation.models import Annotator, Assignment, Image, Participation, Rating, Study
from annotation.quality.services.quality import rating_recorded
from annotation.splits import split_assign
from annotation.studies.services.studies import participation_get_or_create
from core.exceptions import (
    AnnotatorNotActive,
    Conflict,
    InvalidInput,
    NotFound,
    NotMember,
    StudyNotOpen,
)

# How many live leases one claim call may hold for an annotator. The rating page
# holds two (the image shown and the one preloaded behind it); the API may ask for
# up to this many.
MAX_HOLD = 3

# "Random among equals" draws from here; tests and benchmarks seed it
# (engine_seed) so that a run deals the same way twice.
_dealer = random.Random()


def engine_seed(*, seed: int) -> None:
    """Make the engine's dealing reproducible (tests, seeded benchmarks)."""
    _dealer.seed(seed)


def engine_dealer() -> random.Random:
    """The dealer the engine draws from (the SQL path is handed its draws)."""
    return _dealer


def annotator_set_status(*, annotator: Annotator, status: str, reason: str = "") -> int:
    """Pause, ban, exclude or re-activate. Returns the number of slots reopened.

    Excluding invalidates the annotator's ratings and hands their slots back, so
    the image is topped up by someone else; live leases of anyone not active are
    released, and every participation is marked excluded. (Re-activating does not
    re-validate excluded ratings or participations: their slots may already be
    filled.) A rating in flight either commits first (and is
    invalidated here) or waits for this and is refused: see the lock order.
    """
    if status not in Annotator.Status.values:
        raise InvalidInput(f"Unknown status '{status}'.")
    with transaction.atomic():
        locked = annotator_lock_for_change(annotator_id=annotator.pk)
        if locked.erased_at is not None and status != Annotator.Status.EXCLUDED:
            raise Conflict(f"Annotator {locked.public_id} was erased: stays excluded.")
        locked.status = status
        locked.status_reason = reason
        locked.save(update_fields=["status", "status_reason"])
        if status == Annotator.Status.EXCLUDED:
            # Excluded everywhere: every participation too (final, like the
            # invalidated ratings; re-activating lets them join other studies).
            Participation.objects.filter(
                annotator=locked, status=Participation.Status.ACTIVE
            ).update(status=Participation.Status.EXCLUDED, excluded_at=timezone.now())
        reopened = 0
        if status != Annotator.Status.ACTIVE:
            reopened = annotator_release_slots(
                annotator=locked,
                invalidate_ratings=status == Annotator.Status.EXCLUDED,
            )
    annotator.status, annotator.status_reason = status, reason
    return reopened


def annotator_lock_for_change(*, annotator_id: int) -> Annotator:
    """First lock of any status change: waits for the claims and submits in
    flight (they hold ``FOR SHARE``) and makes later ones wait for this."""
    try:
        return Annotator.objects.select_for_update(no_key=True).get(pk=annotator_id)
    except Annotator.DoesNotExist:
        raise NotFound("No such annotator.") from None


def annotator_release_slots(
    *,
    annotator: Annotator,
    invalidate_ratings: bool,
    now: datetime | None = None,
    study: Study | None = None,
) -> int:
    """End the annotator's live leases and, if asked, invalidate their valid
    ratings, giving every slot back (in ``study`` only, when given). Runs inside
    the caller's transaction after ``annotator_lock_for_change``. Returns the
    number of slots reopened."""
    now = now or timezone.now()
    scope = {"annotator": annotator} | ({"study": study} if study else {})
    leases = list(
        Assignment.objects.select_for_update(no_key=True)
        .filter(status=Assignment.Status.LEASED, **scope)
        .order_by("pk")
        .values_list("pk", "image_id")
    )
    ratings = []
    if invalidate_ratings:
        ratings = list(
            Rating.objects.select_for_update(no_key=True)
            .filter(is_valid=True, **scope)
            .order_by("pk")
            .values_list("pk", "image_id")
        )
    Assignment.objects.filter(pk__in=[pk for pk, _ in leases]).update(
        status=Assignment.Status.EXPIRED, finished_at=now
    )
    Rating.objects.filter(pk__in=[pk for pk, _ in ratings]).update(is_valid=False)
    # One pass over the images, ascending: two exclusions sharing images never
    # wait on each other in opposite orders.
    lease_delta = Counter(image_id for _, image_id in leases)
    rating_delta = Counter(image_id for _, image_id in ratings)
    for image_id in sorted(lease_delta.keys() | rating_delta.keys()):
        Image.objects.filter(pk=image_id).update(
            lease_count=F("lease_count") - lease_delta[image_id],
            rating_count=F("rating_count") - rating_delta[image_id],
        )
    return len(leases) + len(ratings)


def _adjust_images(
    counts: Counter, *, lease_delta: int = 0, rating_delta: int = 0
) -> None:
    for image_id in sorted(counts):
        n = counts[image_id]
        Image.objects.filter(pk=image_id).update(
            lease_count=F("lease_count") + lease_delta * n,
            rating_count=F("rating_count") + rating_delta * n,
        )


def _lock_status(annotator: Annotator) -> None:
    """``FOR SHARE`` on the annotator and its status as of now (not as loaded at
    authentication): a status change in flight finishes first, and none can start
    until this transaction ends. The ORM has no FOR SHARE, hence the SQL."""
    with connection.cursor() as cursor:
        lock = " FOR SHARE" if connection.features.has_select_for_update else ""
        cursor.execute(
            f"SELECT status FROM {Annotator._meta.db_table} WHERE id = %s{lock}",
            [annotator.pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise NotFound("No such annotator.")
    annotator.status = row[0]


def _check_can_work(annotator: Annotator, study: Study) -> None:
    if annotator.status != Annotator.Status.ACTIVE:
        raise AnnotatorNotActive(
            {
                "paused": "Your account is paused. Please contact the researchers.",
                "banned": "Your account has been blocked from this platform.",
                "excluded": "Your account has been excluded from this study.",
            }.get(annotator.status, "Your account is not active.")
        )
    if study.status != Study.Status.OPEN:
        raise StudyNotOpen(f"The study '{study.name}' is not open for ratings.")


def _check_participation(status: str | None) -> None:
    """Refuse a participation excluded from its study (``participation_exclude``:
    it waits for the annotator's lock, which the caller holds ``FOR SHARE``)."""
    if status == Participation.Status.EXCLUDED:
        raise AnnotatorNotActive("You have been excluded from this study.")


def lease_expire(
    *, study_id: int | None = None, now: datetime | None = None, limit: int = 1000
) -> int:
    """Mark overdue leases expired and give their slots back. Safe to run anywhere,
    any number of times at once: rows are taken with SKIP LOCKED, each exactly once."""
    now = now or timezone.now()
    with transaction.atomic():
        qs = Assignment.objects.filter(
            status=Assignment.Status.LEASED, expires_at__lte=now
        )
        if study_id is not None:
            qs = qs.filter(study_id=study_id)
        rows = list(
            qs.select_for_update(skip_locked=True, no_key=True)
            .order_by("pk")
            .values_list("pk", "image_id")[:limit]
        )
        if not rows:
            return 0
        Assignment.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            status=Assignment.Status.EXPIRED, finished_at=now
        )
        _adjust_images(Counter(image_id for _, image_id in rows), lease_delta=-1)
    return len(rows)


def _live_leases(annotator: Annotator, study: Study, now: datetime) -> list[Assignment]:
    return list(
        Assignment.objects.filter(
            annotator=annotator,
            study=study,
            status=Assignment.Status.LEASED,
            expires_at__gt=now,
        )
        .select_related("image")
        .order_by("leased_at", "pk")
    )


def _pick_image(annotator: Annotator, study: Study, exclude: set[int]) -> Image | None:
    """Lock one image with a free slot that this annotator has never been dealt.

    Fullest images first (fewest open slots), random among equals: start at a
    random point in the fixed ``shuffle`` order and wrap around. Every query walks
    the ``image_open_queue`` index and stops at its first row.

    Plain SQL rather than querysets: this runs on every claim, and building the
    equivalent ORM queries cost more CPU than PostgreSQL spends executing them.
    """
    candidates = (
        f"FROM {Image._meta.db_table} i WHERE i.study_id = %s AND i.open_slots > 0 "
        f"AND NOT EXISTS (SELECT 1 FROM {Assignment._meta.db_table} a "
        "WHERE a.image_id = i.id AND a.annotator_id = %s)"
    )
    common = [study.pk, annotator.pk]
    if exclude:
        candidates += f" AND i.id NOT IN ({', '.join(['%s'] * len(exclude))})"
        common += sorted(exclude)
    # SQLite has no row locks (its IMMEDIATE transactions serialise writers).
    lock = (
        " FOR NO KEY UPDATE OF i SKIP LOCKED"
        if connection.features.has_select_for_update_skip_locked
        else ""
    )
    # ORDER BY ... LIMIT 1, not MIN(): with the anti-join PostgreSQL would
    # aggregate every open image; this walks the index and stops at the first.
    fullest = (
        f"(SELECT i.open_slots {candidates} AND i.open_slots > %s "
        "ORDER BY i.open_slots, i.shuffle LIMIT 1)"
    )
    level_floor = 0
    with connection.cursor() as cursor:
        for _ in range(study.raters_per_image + 2):
            start = _dealer.randrange(2**31)
            # Usually one query: the fullest level and the first image from a
            # random point in it; wrap around, then step up a level only when
            # every candidate there is being claimed by someone else right now.
            for op in (">=", "<"):
                cursor.execute(
                    f"SELECT i.id, i.file, i.width, i.height {candidates} "
                    f"AND i.open_slots = {fullest} AND i.shuffle {op} %s "
                    f"ORDER BY i.shuffle LIMIT 1{lock}",
                    [*common, *common, level_floor, start],
                )
                row = cursor.fetchone()
                if row is not None:
                    return Image.from_db(
                        connection.alias, ["id", "file", "width", "height"], row
                    )
            cursor.execute(f"SELECT {fullest}", [*common, level_floor])
            level = cursor.fetchone()[0]
            if level is None:
                return None
            level_floor = level
    return None


def _locked_participation(annotator: Annotator, study: Study) -> Participation:
    """The annotator's participation, locked; only members get this far.

    A member joined through this study's own invite or Prolific link and consented
    (``participation_consent``). Staff are members of every study: their
    participation is recorded, with consent, on their first claim.
    """
    qs = Participation.objects.select_for_update(no_key=True).filter(
        annotator=annotator, study=study
    )
    participation = qs.first()
    if participation is None or participation.consented_at is None:
        if not annotator.user.is_staff:
            raise NotMember()
        participation_get_or_create(annotator=annotator, study=study)
        qs.filter(consented_at=None).update(consented_at=timezone.now())
        participation = qs.get()
    return participation


def assignment_claim(
    *, annotator: Annotator, study: Study, hold: int = 1, now: datetime | None = None
) -> list[Assignment]:
    """The annotator's live leases in this study, oldest first, topped up to ``hold``.

    Asking again returns the same lease (a reload or a retried request does not
    burn images). An empty list means nothing is left for this annotator: the
    quota is reached or every remaining image is full or already dealt to them.
    """
    if not 1 <= hold <= MAX_HOLD:
        raise InvalidInput(f"hold must be between 1 and {MAX_HOLD}.")
    now = now or timezone.now()
    if engine_sql.enabled():
        with engine_sql.one_statement():
            outcome, _, leases = engine_sql.claim(
                annotator_id=annotator.pk,
                study_id=study.pk,
                hold=hold,
                now=now,
                dealer=_dealer,
            )
        if outcome != engine_sql.SLOW:
            for lease in leases:
                lease.study, lease.annotator = study, annotator
            return leases
    with transaction.atomic():
        _lock_status(annotator)
        _check_can_work(annotator, study)
        # Serialises this annotator's own claims (quota, hold) and nobody else's.
        participation = _locked_participation(annotator, study)
        _check_participation(participation.status)
        if participation.started_at is None:
            participation.started_at = now
            participation.save(update_fields=["started_at"])
        live = _live_leases(annotator, study, now)
        if len(live) < hold:
            _top_up(annotator, study, live, hold, now)
        if live and live[0].shown_at is None:
            # The first lease is what the annotator sees now; preloaded ones start
            # their clock when they come to the front (time on item is measured
            # from here, not from the lease).
            Assignment.objects.filter(pk=live[0].pk).update(shown_at=now)
            live[0].shown_at = now
    return live[:hold]


class PageClaim(NamedTuple):
    leases: list[Assignment]
    rated: int
    total: int  # as selectors.annotator_progress counts it
    item_due: bool  # an uncounted item (quality.stream_item_next) is due


def assignment_claim_for_page(
    *, annotator: Annotator, study: Study, hold: int, now: datetime | None = None
) -> PageClaim | None:
    """``assignment_claim`` for the rating page, with the progress it shows and
    whether an uncounted item is due, in one statement on PostgreSQL. None when
    that statement cannot answer (SQLite, an annotator the page must send to the
    instructions or the end first, anything not plain): the caller then takes
    the page's ordinary path, which changes nothing twice."""
    if not engine_sql.enabled() or not 1 <= hold <= MAX_HOLD:
        return None
    with engine_sql.one_statement():
        outcome, leases, page = engine_sql.claim_page(
            annotator_id=annotator.pk,
            study_id=study.pk,
            hold=hold,
            now=now or timezone.now(),
            dealer=_dealer,
        )
    if outcome == engine_sql.SLOW or page is None:
        return None
    for lease in leases:
        lease.study, lease.annotator = study, annotator
    rated, pool, item_due = page
    total = max(rated, min(study.quota_per_annotator, pool))
    return PageClaim(leases, rated, total, item_due)


def _top_up(annotator, study, live: list[Assignment], hold: int, now) -> None:
    rated = Rating.objects.filter(annotator=annotator, study=study).count()
    room = study.quota_per_annotator - rated - len(live)
    exclude = {a.image_id for a in live}
    before = len(live)
    swept = False
    while len(live) < hold and room > 0:
        image = _pick_image(annotator, study, exclude)
        if image is None and not swept and len(live) == before:
            # Overdue leases still count against their images; only when nothing
            # else is left does it matter, so sweep then (no cron needed for
            # correctness; the beat task keeps the fill order honest meanwhile).
            # Only before this call has locked an image of its own: the sweep
            # then waits on nobody who could be waiting on us.
            swept = True
            if lease_expire(study_id=study.pk, now=now, limit=500):
                continue
        if image is None:
            break
        updated = Image.objects.filter(pk=image.pk, open_slots__gt=0).update(
            lease_count=F("lease_count") + 1
        )
        if updated != 1:  # cannot happen while we hold the row lock; be safe
            exclude.add(image.pk)
            continue
        live.append(
            Assignment.objects.create(
                study=study,
                image=image,
                annotator=annotator,
                leased_at=now,
                expires_at=now + timedelta(seconds=study.lease_seconds),
                shown_at=now if not live else None,
            )
        )
        exclude.add(image.pk)
        room -= 1


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
    *, assignment_id: int, annotator: Annotator, score: int, now: datetime | None = None
) -> tuple[Rating, bool]:
    """Record a score for the image behind an assignment. Returns (rating, created).

    The same score again is a no-op (a network retry); another score is a Conflict.
    A lease that has expired is still accepted while the image has a free slot.
    """
    now = now or timezone.now()
    if engine_sql.enabled() and engine_sql.plain_score(score):
        try:
            with engine_sql.one_statement():
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
        with transaction.atomic():
            return _rating_submit(assignment_id, annotator, score, now)
    except IntegrityError:
        # Only reachable when a rating of this pair exists outside this
        # assignment (e.g. imported): the unique pair refuses it.
        raise Conflict("You already rated this image.") from None


def _rating_submit(assignment_id, annotator, score, now) -> tuple[Rating, bool]:
    _lock_status(annotator)  # checked below, after the idempotent-retry answer
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
    _check_can_work(annotator, study)
    _check_participation(assignment.participation_status)
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
    with transaction.atomic():
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
