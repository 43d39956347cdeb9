"""Erasure: a participant's right to be forgotten.

Ratings and assignments are records (their foreign keys are PROTECT, the admin
cannot delete them): deleting them would leave image counters above their rows.
Erasure instead excludes the annotator first, so every slot they held or filled
is reopened and topped up by someone else, then removes what identifies them.
What remains is a pseudonymous, invalid record: the public id (random, never
derived from the person), scores and timings, kept out of every valid count.
"""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from ..models import Annotator, Participation
from .engine import annotator_lock_for_change, annotator_release_slots

User = get_user_model()


def annotator_erase(
    *, annotator_id: int, reason: str = "", now: datetime | None = None
) -> int:
    """Exclude, then pseudonymise. Idempotent. Returns the number of slots reopened.

    One transaction, in the engine's lock order (Annotator first): a claim or a
    rating in flight either commits before (and is undone here) or waits and is
    refused. The user account is kept (it is what ratings point at, through the
    annotator) but can no longer sign in, and its API tokens are deleted.
    """
    now = now or timezone.now()
    with transaction.atomic():
        annotator = annotator_lock_for_change(annotator_id=annotator_id)
        Participation.objects.filter(annotator=annotator).update(
            external_study_id="", external_session_id=""
        )
        reopened = annotator_release_slots(
            annotator=annotator, invalidate_ratings=True, now=now
        )
        annotator.status = Annotator.Status.EXCLUDED
        annotator.status_reason = f"erased: {reason}" if reason else "erased"
        annotator.external_id = ""
        annotator.demographics = {}
        annotator.erased_at = annotator.erased_at or now
        annotator.save(
            update_fields=[
                "status",
                "status_reason",
                "external_id",
                "demographics",
                "erased_at",
            ]
        )
        # The user row is written by nothing else that holds engine locks.
        user = User.objects.select_for_update(no_key=True).get(pk=annotator.user_id)
        user.username = f"erased-{annotator.public_id}"
        user.email = user.first_name = user.last_name = ""
        user.is_active = user.is_staff = user.is_superuser = False
        user.set_unusable_password()
        user.save()
        user.groups.clear()
        user.user_permissions.clear()
        Token.objects.filter(user=user).delete()
    return reopened
