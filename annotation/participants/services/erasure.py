"""Erasure: a participant's right to be forgotten.

Ratings and assignments are records (their foreign keys are PROTECT, the admin
cannot delete them): deleting them would leave image counters above their rows.
Erasure instead excludes the annotator first, so every slot they held or filled
is reopened and topped up by someone else, then removes everything that
identifies them or was derived from their ratings alone:

- the external id, demographics, recruiting-platform ids, the account's
  username, email and password, its API tokens and sessions;
- the public id, replaced by a new random one (old exports, logs and messages
  named the old one; the kept records cannot be linked to it);
- django-axes' login records of the old username (IP address, user agent);
- admin log entries naming the person (rewritten to the new pseudonym);
- per-annotator quality statistics;
- (kept: a keyed digest of the old public id and external id, never the ids,
  so that an old export or dataset cannot bring their ratings back);
- every dataset export of their studies: finished archives are deleted and the
  export is marked withdrawn (download answers 410 with the reason), running
  ones are failed;
- through the ``annotator_erased`` signal: the reward model's per-annotator rows
  and checkpoint heads, and prompt-steering runs for the person.

What remains is a pseudonymous, invalid record: scores and timings under the new
random public id, kept out of every valid count and every export.
"""

from datetime import datetime

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from rest_framework.authtoken.models import Token

from annotation.datasets.services.export_jobs import exports_withdraw
from annotation.engine.services.engine import (
    annotator_lock_for_change,
    annotator_release_slots,
)
from annotation.models import (
    Annotator,
    AnnotatorQuality,
    ErasedIdentifier,
    Participation,
    Rating,
    _public_id,
)
from annotation.signals import annotator_erased

User = get_user_model()


def annotator_erase(
    *, annotator_id: int, reason: str = "", now: datetime | None = None
) -> int:
    """Exclude, then remove what identifies the person. Idempotent. Returns the
    number of slots reopened.

    One transaction, in the engine's lock order (Annotator first): a claim or a
    rating in flight either commits before (and is undone here) or waits and is
    refused. The user account is kept (it is what ratings point at, through the
    annotator) but can no longer sign in. Export archives are deleted after the
    transaction commits (a rollback keeps them).
    """
    now = now or timezone.now()
    with transaction.atomic():
        annotator = annotator_lock_for_change(annotator_id=annotator_id)
        study_ids = _study_ids(annotator)
        Participation.objects.filter(annotator=annotator).update(
            external_study_id="", external_session_id=""
        )
        reopened = annotator_release_slots(
            annotator=annotator, invalidate_ratings=True, now=now
        )
        first_time = annotator.erased_at is None
        old_public_id = annotator.public_id
        _suppress(old_public_id, annotator.external_id)
        annotator.status = Annotator.Status.EXCLUDED
        annotator.status_reason = f"erased: {reason}" if reason else "erased"
        annotator.external_id = ""
        annotator.demographics = {}
        annotator.erased_at = annotator.erased_at or now
        if first_time:
            annotator.public_id = _public_id()
        annotator.save(
            update_fields=[
                "status",
                "status_reason",
                "external_id",
                "demographics",
                "erased_at",
                "public_id",
            ]
        )
        old_username = _account_erase(annotator)
        _traces_erase(annotator, old_username, old_public_id)
        AnnotatorQuality.objects.filter(annotator=annotator).delete()
        exports_withdraw(
            study_ids=study_ids,
            reason=(
                f"Withdrawn on {now:%Y-%m-%d}: an annotator whose data it held was "
                "erased. Export the study again."
            ),
            now=now,
        )
        annotator_erased.send(
            sender=Annotator, annotator_id=annotator.pk, study_ids=study_ids
        )
    return reopened


def _study_ids(annotator: Annotator) -> list[int]:
    joined = Participation.objects.filter(annotator=annotator).values_list(
        "study_id", flat=True
    )
    rated = (
        Rating.objects.filter(annotator=annotator)
        .order_by()
        .values_list("study_id", flat=True)
        .distinct()
    )
    return sorted(set(joined) | set(rated))


def _account_erase(annotator: Annotator) -> str:
    """Make the account anonymous and unusable; returns its old username."""
    # The user row is written by nothing else that holds engine locks.
    user = User.objects.select_for_update(no_key=True).get(pk=annotator.user_id)
    old_username = user.username
    user.username = f"erased-{annotator.public_id}"
    user.email = user.first_name = user.last_name = ""
    user.is_active = user.is_staff = user.is_superuser = False
    user.set_unusable_password()
    user.save()
    user.groups.clear()
    user.user_permissions.clear()
    Token.objects.filter(user=user).delete()
    _sessions_delete(user.pk)
    return old_username


def _sessions_delete(user_id: int) -> None:
    """The person's live sessions (their data names the user and the annotator)."""
    doomed = [
        s.session_key
        for s in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if str(s.get_decoded().get("_auth_user_id")) == str(user_id)
    ]
    Session.objects.filter(session_key__in=doomed).delete()


def _traces_erase(annotator: Annotator, old_username: str, old_public_id: str):
    """Login records and admin log entries that name the person."""
    if old_username and not old_username.startswith("erased-"):
        for model in (AccessAttempt, AccessLog, AccessFailureLog):
            model.objects.filter(username=old_username).delete()
    for obj_model, pk in ((Annotator, annotator.pk), (User, annotator.user_id)):
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(obj_model),
            object_id=str(pk),
        ).update(object_repr=annotator.public_id, change_message="")
    LogEntry.objects.filter(object_repr__contains=old_public_id).update(
        object_repr=annotator.public_id
    )


def identifier_digest(identifier: str) -> str:
    """A keyed, one-way digest of an identifier (HMAC-SHA256 under SECRET_KEY):
    what the suppression list keeps instead of the identifier."""
    return salted_hmac("palate.erased-identifier", identifier).hexdigest()


def identifiers_erased(identifiers) -> set[str]:
    """Those of ``identifiers`` that belonged to someone erased on this instance
    (their old public id or external id)."""
    digests = {identifier_digest(i): i for i in identifiers if i}
    found = ErasedIdentifier.objects.filter(digest__in=list(digests)).values_list(
        "digest", flat=True
    )
    return {digests[d] for d in found}


def _suppress(*identifiers: str) -> None:
    ErasedIdentifier.objects.bulk_create(
        [ErasedIdentifier(digest=identifier_digest(i)) for i in identifiers if i],
        ignore_conflicts=True,
    )
