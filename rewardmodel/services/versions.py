"""Model versions: promotion on a paired held-out comparison, rollback, events.

One version is active per study (and one for runs over every study): a database
constraint. Automatic promotion reads the comparison its training run made
(``services.comparison``): the new and the active version scored on the same
test-split ratings, newer than the active version's training data. A version
is promoted when its mean pairwise accuracy there is at least the active one's;
without such a comparison (no new held-out rating, another active version since)
the active version stays. ``primary_metric`` (the validation grid's best) is no
longer compared: two of them come from different data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from core.exceptions import Conflict

from ..models import ModelVersion, VersionEvent


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def version_event_record(*, version, action, reason, previous, user) -> VersionEvent:
    return VersionEvent.objects.create(
        version=version,
        action=action,
        reason=reason,
        previous=previous,
        user=user
        if user is not None and getattr(user, "is_authenticated", False)
        else None,
    )


def _active_for(version: ModelVersion):
    """The active version in the same scope (same study, or both global)."""
    return (
        ModelVersion.objects.select_for_update(no_key=True)
        .filter(is_active=True, study_id=version.study_id)
        .first()
    )


def _activate(version: ModelVersion, reason: str) -> ModelVersion | None:
    from ..inference import version_cache_clear

    transaction.on_commit(version_cache_clear)
    previous = _active_for(version)
    if previous is not None and previous.pk != version.pk:
        # Deactivate first: the one-active constraint is checked per statement.
        previous.is_active = False
        previous.status = ModelVersion.Status.RETIRED
        previous.save(update_fields=["is_active", "status"])
    version.is_active = True
    version.status = ModelVersion.Status.ACTIVE
    version.promoted_at = timezone.now()
    version.promotion_reason = reason
    version.save(
        update_fields=["is_active", "status", "promoted_at", "promotion_reason"]
    )
    return previous


def _decision(version, active, *, force: bool, reason: str) -> tuple[bool, str]:
    from ..comparison import comparison_text

    run = version.training_run
    comparison = (run.comparison if run is not None else None) or {}
    said = comparison_text(comparison, new=f"v{version.pk}")
    if force:
        why = f"forced ({reason})" if reason else "forced"
        return True, f"{why}; {said}" if said else why
    if active is None:
        ok, why = True, "first version: no active version to compare with"
    elif comparison.get("against") != active.pk:
        ok, why = (
            False,
            (
                f"not compared with the active v{active.pk} on the same held-out "
                "ratings: kept as a candidate"
            ),
        )
    elif not comparison.get("possible"):
        ok, why = False, f"{said}: kept as a candidate"
    else:
        ok = comparison["difference"]["mean"] >= 0
        verdict = "at least as good" if ok else "worse: kept as a candidate"
        why = f"{said}: {verdict}"
    return ok, f"{why} ({reason})" if reason and ok else why


def model_version_promote(
    *, version: ModelVersion, force: bool = False, user=None, reason: str = ""
) -> bool:
    """Make ``version`` active for its study if, on its run's paired comparison
    with the active version, it is at least as good (or ``force``). Records the
    decision and its reason."""
    with transaction.atomic(durable=True):
        version = (
            ModelVersion.objects.select_for_update(of=("self",), no_key=True)
            .select_related("training_run")
            .get(pk=version.pk)
        )
        active = _active_for(version)
        if active is not None and active.pk == version.pk:
            return True
        ok, why = _decision(version, active, force=force, reason=reason)
        if not ok:
            version.promotion_reason = why
            version.save(update_fields=["promotion_reason"])
            version_event_record(
                version=version,
                action=VersionEvent.Action.NOT_PROMOTED,
                reason=why,
                previous=active,
                user=user,
            )
            return False
        previous = _activate(version, why)
        version_event_record(
            version=version,
            action=VersionEvent.Action.PROMOTED,
            reason=why,
            previous=previous,
            user=user,
        )
    return True


def model_version_rollback(
    *, version: ModelVersion, user=None, reason: str = ""
) -> ModelVersion:
    """Make an earlier version active again, whatever its metric."""
    if not Path(version.checkpoint_path).is_file():
        raise Conflict(f"v{version.pk}'s checkpoint file is missing; cannot roll back.")
    if file_sha256(version.checkpoint_path) != version.checkpoint_sha256:
        raise Conflict(f"v{version.pk}'s checkpoint does not match its checksum.")
    with transaction.atomic(durable=True):
        version = ModelVersion.objects.select_for_update(no_key=True).get(pk=version.pk)
        if version.is_active:
            raise Conflict(f"v{version.pk} is already the active version.")
        active = _active_for(version)
        # "Rollback" only when it goes back to an older version than the active one.
        older = active is not None and version.pk < active.pk
        what = f"rollback to v{version.pk}" if older else f"v{version.pk} made active"
        why = what + (f": {reason}" if reason else "")
        previous = _activate(version, why)
        version_event_record(
            version=version,
            action=VersionEvent.Action.ROLLED_BACK,
            reason=why,
            previous=previous,
            user=user,
        )
    return version
