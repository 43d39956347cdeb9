"""Staff actions on annotators (pause, resume, exclude from a study, exclude
from every study), each in the audit log, and the annotator's own pause, which
keeps their images for them.

Excluding acts on one study's participation (``participation_exclude``): the
annotator's ratings in other studies stay valid. Excluding a person everywhere is
its own action (``annotator_exclude_everywhere``), logged once per study it
touches."""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from annotation.engine.services.engine import (
    annotator_lock_for_change,
    annotator_release_slots,
    annotator_set_status,
)
from annotation.models import (
    Annotator,
    Assignment,
    ModerationEvent,
    Participation,
    Study,
)
from annotation.participants.selectors import exclusion_effects
from core.exceptions import Conflict, InvalidInput

# How long an annotator's leases are kept through a pause. Longer than a lease,
# so a coffee break loses nothing; bounded, so an abandoned tab still gives its
# images back to others.
PAUSE_HOLD_SECONDS = 30 * 60

_TARGET = {
    ModerationEvent.Action.PAUSE: Annotator.Status.PAUSED,
    ModerationEvent.Action.AUTO_PAUSE: Annotator.Status.PAUSED,
    ModerationEvent.Action.RESUME: Annotator.Status.ACTIVE,
}
_ALLOWED_FROM = {
    ModerationEvent.Action.PAUSE: {Annotator.Status.ACTIVE},
    ModerationEvent.Action.AUTO_PAUSE: {Annotator.Status.ACTIVE},
    ModerationEvent.Action.RESUME: {Annotator.Status.PAUSED},
}


def annotator_moderate(
    *,
    annotator: Annotator,
    action: str,
    user=None,
    study: Study | None = None,
    reason: str = "",
) -> ModerationEvent:
    """Pause, resume or exclude an annotator and log who did it, when and why.

    Pausing and resuming act on the annotator (every study). Excluding acts on
    ``study`` only (``participation_exclude``); ``exclude_all`` excludes from
    every study (``annotator_exclude_everywhere``; returns the first event).
    """
    if action == ModerationEvent.Action.EXCLUDE:
        if study is None:
            raise InvalidInput("Say which study to exclude from, or use exclude_all.")
        return participation_exclude(
            annotator=annotator, study=study, user=user, reason=reason
        )
    if action == ModerationEvent.Action.EXCLUDE_ALL:
        return annotator_exclude_everywhere(
            annotator=annotator, user=user, reason=reason
        )[0]
    if action not in _TARGET:
        raise InvalidInput(f"Unknown action '{action}'.")
    with transaction.atomic():
        # The engine locks the Annotator row first too; check the status under it.
        current = Annotator.objects.select_for_update().get(pk=annotator.pk).status
        if current not in _ALLOWED_FROM[action]:
            verb = "pause" if action == ModerationEvent.Action.AUTO_PAUSE else action
            raise Conflict(
                f"Annotator {annotator.public_id} is {current}: cannot {verb}."
            )
        reopened = annotator_set_status(
            annotator=annotator, status=_TARGET[action], reason=reason
        )
        event = ModerationEvent.objects.create(
            annotator=annotator,
            study=study,
            action=action,
            reason=reason,
            slots_reopened=reopened,
            user=_staff(user),
        )
    annotator.status = _TARGET[action]
    return event


def _staff(user):
    return user if getattr(user, "is_authenticated", False) else None


def participation_exclude(
    *,
    annotator: Annotator,
    study: Study,
    user=None,
    reason: str = "",
    now: datetime | None = None,
) -> ModerationEvent:
    """Exclude the annotator from ``study`` only: their valid ratings there become
    invalid and their leases there end, reopening those slots; their claims and
    ratings there are refused from now on. Other studies are untouched. Final:
    the reopened slots may be filled by others.

    Lock order as everywhere: the Annotator (``FOR NO KEY UPDATE``, so a claim or
    rating in flight, which holds it ``FOR SHARE``, commits first and is undone
    here, or waits and is refused), then the Participation, then its rows.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = annotator_lock_for_change(annotator_id=annotator.pk)
        if locked.status == Annotator.Status.EXCLUDED:
            raise Conflict(
                f"Annotator {locked.public_id} is excluded from every study already."
            )
        part, _ = Participation.objects.select_for_update(no_key=True).get_or_create(
            annotator=locked, study=study
        )
        if part.status == Participation.Status.EXCLUDED:
            raise Conflict(
                f"Annotator {locked.public_id} is already excluded from {study.name}."
            )
        part.status, part.excluded_at = Participation.Status.EXCLUDED, now
        part.save(update_fields=["status", "excluded_at"])
        reopened = annotator_release_slots(
            annotator=locked, invalidate_ratings=True, now=now, study=study
        )
        return ModerationEvent.objects.create(
            annotator=locked,
            study=study,
            action=ModerationEvent.Action.EXCLUDE,
            reason=reason,
            slots_reopened=reopened,
            user=_staff(user),
        )


def annotator_exclude_everywhere(
    *, annotator: Annotator, user=None, reason: str = ""
) -> list[ModerationEvent]:
    """Exclude the annotator from every study (``annotator_set_status``): all
    their valid ratings become invalid, every participation is excluded. Logged
    once per study it touches, with that study's slots (counted under the
    annotator's lock, which holds every claim and rating of theirs off)."""
    with transaction.atomic():
        locked = annotator_lock_for_change(annotator_id=annotator.pk)
        if locked.status == Annotator.Status.EXCLUDED:
            raise Conflict(
                f"Annotator {locked.public_id} is excluded from every study already."
            )
        effects = exclusion_effects(annotator=locked)
        annotator_set_status(
            annotator=locked, status=Annotator.Status.EXCLUDED, reason=reason
        )
        events = [
            ModerationEvent.objects.create(
                annotator=locked,
                study=effect.study,
                action=ModerationEvent.Action.EXCLUDE_ALL,
                reason=reason,
                slots_reopened=effect.slots,
                user=_staff(user),
            )
            for effect in effects
        ] or [
            ModerationEvent.objects.create(
                annotator=locked,
                action=ModerationEvent.Action.EXCLUDE_ALL,
                reason=reason,
                user=_staff(user),
            )
        ]
    annotator.status = Annotator.Status.EXCLUDED
    return events


def participation_pause(
    *, annotator: Annotator, study: Study, now: datetime | None = None
) -> int:
    """The annotator takes a break: keep their live leases (the image on screen
    and the preloaded one) for ``PAUSE_HOLD_SECONDS``. Returns how many."""
    now = now or timezone.now()
    hold = now + timedelta(seconds=max(PAUSE_HOLD_SECONDS, study.lease_seconds))
    with transaction.atomic():
        list(
            Participation.objects.select_for_update().filter(
                annotator=annotator, study=study
            )
        )
        return Assignment.objects.filter(
            annotator=annotator,
            study=study,
            status=Assignment.Status.LEASED,
            expires_at__gt=now,
        ).update(expires_at=Greatest(F("expires_at"), hold))


def participation_resume(
    *, annotator: Annotator, study: Study, now: datetime | None = None
) -> int:
    """Back from a break: the leases run a normal lease from now, and the image
    on screen starts its time-on-item clock again (the break is not rating time)."""
    now = now or timezone.now()
    with transaction.atomic():
        list(
            Participation.objects.select_for_update().filter(
                annotator=annotator, study=study
            )
        )
        live = Assignment.objects.filter(
            annotator=annotator,
            study=study,
            status=Assignment.Status.LEASED,
            expires_at__gt=now,
        )
        live.filter(shown_at__isnull=False).update(shown_at=now)
        return live.update(expires_at=now + timedelta(seconds=study.lease_seconds))
