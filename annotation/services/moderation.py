"""Staff actions on annotators (pause, resume, exclude), each in the audit log,
and the annotator's own pause, which keeps their images for them."""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from core.exceptions import Conflict, InvalidInput

from ..models import Annotator, Assignment, ModerationEvent, Participation, Study
from .engine import annotator_set_status

# How long an annotator's leases are kept through a pause. Longer than a lease,
# so a coffee break loses nothing; bounded, so an abandoned tab still gives its
# images back to others.
PAUSE_HOLD_SECONDS = 30 * 60

_TARGET = {
    ModerationEvent.Action.PAUSE: Annotator.Status.PAUSED,
    ModerationEvent.Action.AUTO_PAUSE: Annotator.Status.PAUSED,
    ModerationEvent.Action.RESUME: Annotator.Status.ACTIVE,
    ModerationEvent.Action.EXCLUDE: Annotator.Status.EXCLUDED,
}
_ALLOWED_FROM = {
    ModerationEvent.Action.PAUSE: {Annotator.Status.ACTIVE},
    ModerationEvent.Action.AUTO_PAUSE: {Annotator.Status.ACTIVE},
    ModerationEvent.Action.RESUME: {Annotator.Status.PAUSED},
    ModerationEvent.Action.EXCLUDE: {
        Annotator.Status.ACTIVE,
        Annotator.Status.PAUSED,
        Annotator.Status.BANNED,
    },
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

    Excluding invalidates their ratings and reopens the slots (training and
    exports read valid ratings only); it cannot be undone by resuming, because
    the reopened slots may already be filled by others.
    """
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
            user=user if getattr(user, "is_authenticated", False) else None,
        )
    annotator.status = _TARGET[action]
    return event


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
