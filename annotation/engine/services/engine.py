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
  Status changes (pause, resume, exclusion, QC's automatic pause) take
  ``FOR NO KEY UPDATE``, which conflicts with ``FOR SHARE`` but not with the
  ``FOR KEY SHARE`` that every insert of a row naming the annotator takes.
  Erasure alone takes ``FOR UPDATE``: it changes ``public_id``, a key column, and
  must not upgrade its lock halfway.
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

from collections import Counter
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.engine.selectors import annotator_rated
from annotation.engine.services import engine_sql
from annotation.engine.services.dealing import (
    ADAPTIVE,
    adaptive_pick,
)
from annotation.engine.services.guards import (
    can_work_check,
    participation_check,
    status_lock_share,
)
from annotation.engine.services.picking import Starts, image_pick, starts_draw
from annotation.models import Annotator, Assignment, Image, Participation, Rating, Study
from annotation.studies.services.studies import participation_get_or_create
from core.exceptions import (
    Conflict,
    InvalidInput,
    NotFound,
    NotMember,
)

# How many live leases one claim call may hold for an annotator. The rating page
# holds two (the image shown and the one preloaded behind it); the API may ask for
# up to this many.
MAX_HOLD = 3


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
    # nested: annotator_moderate and annotator_exclude_everywhere change the
    # status inside their own transaction
    with transaction.atomic(durable=False):
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


def annotator_lock_for_change(
    *, annotator_id: int, key_change: bool = False
) -> Annotator:
    """First lock of any status change: waits for the claims and submits in
    flight (they hold ``FOR SHARE``) and makes later ones wait for this.

    ``FOR NO KEY UPDATE`` unless the caller will change a key column (erasure
    gives a new ``public_id``): that UPDATE needs ``FOR UPDATE``, and taking it
    first avoids upgrading the lock after others took ``FOR KEY SHARE``."""
    try:
        return Annotator.objects.select_for_update(no_key=not key_change).get(
            pk=annotator_id
        )
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


def lease_expire(
    *, study_id: int | None = None, now: datetime | None = None, limit: int = 1000
) -> int:
    """Mark overdue leases expired and give their slots back. Safe to run anywhere,
    any number of times at once: rows are taken with SKIP LOCKED, each exactly once."""
    now = now or timezone.now()
    # nested: a claim that finds nothing sweeps its study inside its own transaction
    with transaction.atomic(durable=False):
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
    *,
    annotator: Annotator,
    study: Study,
    hold: int = 1,
    now: datetime | None = None,
    sql_first: bool = True,
) -> list[Assignment]:
    """The annotator's live leases in this study, oldest first, topped up to ``hold``.

    Asking again returns the same lease (a reload or a retried request does not
    burn images). An empty list means nothing is left for this annotator: the
    quota is reached or every remaining image is full or already dealt to them.

    The SQL path first where it is enabled, the Python path when it answers
    ``NEEDS_PYTHON_ENGINE``; ``sql_first=False``: the caller already had that
    answer for this request (the hot view), so ``palate_claim`` is not run again.
    """
    if not 1 <= hold <= MAX_HOLD:
        raise InvalidInput(f"hold must be between 1 and {MAX_HOLD}.")
    now = now or timezone.now()
    starts = starts_draw(hold)  # the same draws whichever path deals
    if sql_first and engine_sql.enabled():
        outcome, _, leases = engine_sql.claim(
            annotator_id=annotator.pk,
            study_id=study.pk,
            hold=hold,
            now=now,
            starts=starts,
        )
        if outcome != engine_sql.NEEDS_PYTHON_ENGINE:
            for lease in leases:
                lease.study, lease.annotator = study, annotator
            return leases
    return _claim_python(annotator, study, hold, now, Starts(starts))


def _claim_python(annotator, study, hold, now, starts: Starts) -> list[Assignment]:
    with transaction.atomic(durable=True):
        status_lock_share(annotator)
        can_work_check(annotator, study)
        # Serialises this annotator's own claims (quota, hold) and nobody else's.
        participation = _locked_participation(annotator, study)
        participation_check(participation.status)
        if participation.started_at is None:
            participation.started_at = now
            participation.save(update_fields=["started_at"])
        live = _live_leases(annotator, study, now)
        if len(live) < hold:
            _top_up(annotator, study, live, hold, now, starts)
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
    outcome, leases, page = engine_sql.claim_page(
        annotator_id=annotator.pk,
        study_id=study.pk,
        hold=hold,
        now=now or timezone.now(),
        starts=starts_draw(hold),
    )
    if outcome == engine_sql.NEEDS_PYTHON_ENGINE or page is None:
        return None
    for lease in leases:
        lease.study, lease.annotator = study, annotator
    rated, pool, item_due = page
    total = max(rated, min(study.quota_per_annotator, pool))
    return PageClaim(leases, rated, total, item_due)


def _top_up(annotator, study, live, hold: int, now, starts: Starts) -> None:
    rated = annotator_rated(annotator_id=annotator.pk, study_id=study.pk)
    room = study.quota_per_annotator - rated - len(live)
    exclude = {a.image_id for a in live}
    swept = locked = False  # locked: this transaction holds an image's row lock
    while len(live) < hold and room > 0:
        # Under ``adaptive`` past the warm-up, the ranking's pick (``dealing``);
        # otherwise, or when it has none, fullest-first.
        picked = adaptive_pick(
            annotator=annotator, study=study, exclude=exclude, rated=rated
        )
        dealt = {}
        if picked is not None:
            image, rank, info = picked
            dealt = {
                "dealt_by": ADAPTIVE,
                "dealt_rank": rank,
                "dealt_information": info,
            }
        else:
            # Only before this claim dealt an image: then "nothing left" is the
            # answer at stake (picking._pick_waiting looks again, never waits).
            image = image_pick(annotator, study, exclude, starts, may_wait=not locked)
        if image is None and not swept and not locked:
            # Overdue leases still count against their images; only when nothing
            # else is left does it matter, so sweep then (no cron needed for
            # correctness; the beat task keeps the fill order honest meanwhile).
            # Only before this call has locked an image of its own: the sweep
            # then waits on nobody who could be waiting on us.
            swept = True
            if lease_expire(study_id=study.pk, now=now, limit=500):
                locked = True
                continue
        if image is None:
            break
        locked = True
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
                **dealt,
            )
        )
        exclude.add(image.pk)
        room -= 1
