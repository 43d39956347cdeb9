"""Entering a study through the browser: invite and Prolific links, consent,
demographics, starting and completing."""

import hmac
import re
import secrets
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import DEMOGRAPHIC_FIELDS, Annotator, Participation, Study
from annotation.selectors import annotator_by_external_id
from annotation.studies.services.studies import (
    annotator_create,
    participation_get_or_create,
)
from core.exceptions import InvalidInput, NotFound, NotMember, StudyNotOpen

# Prolific's ids are 24 hex digits; allow a little more (other platforms, tests)
# but nothing that could not be a plain id: no NUL, no spaces, no placeholders.
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
ENTRY_ID_NAMES = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")


def entry_ids_clean(*, params: dict) -> dict[str, str]:
    """The recruiting platform's ids from an entry link, checked: each absent or a
    plain id of at most 128 characters (``InvalidInput`` otherwise)."""
    ids = {}
    for name in ENTRY_ID_NAMES:
        value = str(params.get(name) or "").strip()
        if value and not _EXTERNAL_ID.fullmatch(value):
            raise InvalidInput(
                f"{name} in this link is not a valid id (letters, digits and - _ . : "
                "only, at most 128). Please open the link exactly as you were given it."
            )
        ids[name] = value
    return ids


def prolific_session_check(
    *, annotator: Annotator, study: Study, session_id: str
) -> Participation | None:
    """A known PID may continue a study only with the Prolific session that began
    it: the PID alone is not a secret (it appears in every study link of that
    participant), the SESSION_ID of one study's submission is. Returns the
    participation in this study, if any."""
    p = Participation.objects.filter(annotator=annotator, study=study).first()
    recorded = p.external_session_id if p else ""
    if recorded and not hmac.compare_digest(recorded, session_id):
        raise NotMember(
            "This Prolific session does not match the one that started this study. "
            "Please return to Prolific and open the study from there."
        )
    return p


def study_invite_check(*, study: Study, token: str) -> None:
    """The entry link must carry the study's invite token and the study be open."""
    if not token or not hmac.compare_digest(str(token), study.invite_token):
        raise NotFound(
            "This link is not valid: please check the address you were given."
        )
    if study.status != Study.Status.OPEN:
        raise StudyNotOpen(f"The study '{study.name}' is not open for ratings.")


def participation_admission_check(
    *, annotator: Annotator, study: Study, token: str | None
) -> None:
    """Consent admits an annotator to a study only when it comes through that
    study's own link (its invite token). Staff may join any study without one:
    they can read every invite link anyway, and this is how they preview a study."""
    if annotator.user.is_staff:
        return
    if not token or not hmac.compare_digest(str(token), study.invite_token):
        raise NotMember()
    if study.status != Study.Status.OPEN:
        raise StudyNotOpen(f"The study '{study.name}' is not open for ratings.")


def participation_consent(
    *,
    annotator: Annotator,
    study: Study,
    token: str | None = None,
    demographics: dict | None = None,
    external_study_id: str = "",
    external_session_id: str = "",
    consent: bool = True,
    now: datetime | None = None,
) -> Participation:
    """Record consent (once), the answers to the study's demographics questions and
    the recruiting platform's ids. Calling it again changes only what was blank;
    ``consent=False`` records the ids alone (a returning Prolific visit).

    Consent is what makes an annotator a member of the study (the engine refuses
    everyone else), so a first consent needs the study's invite ``token``
    (``NotMember`` otherwise), except for staff.
    """
    now = now or timezone.now()
    asked = set(study.demographics_fields or ()) & set(DEMOGRAPHIC_FIELDS)
    answers = {
        k: str(v)[:100] for k, v in (demographics or {}).items() if k in asked and v
    }
    if any("\x00" in v for v in answers.values()):
        raise InvalidInput("Answers cannot contain NUL characters.")
    with transaction.atomic():
        if answers:
            # Annotator before Participation: the engine's lock order.
            a = Annotator.objects.select_for_update(no_key=True).get(pk=annotator.pk)
            a.demographics = {**a.demographics, **answers}
            a.save(update_fields=["demographics"])
            annotator.demographics = a.demographics
        p = participation_get_or_create(annotator=annotator, study=study)
        p = Participation.objects.select_for_update(no_key=True).get(pk=p.pk)
        changed = []
        if consent and p.consented_at is None:
            participation_admission_check(annotator=annotator, study=study, token=token)
            p.consented_at = now
            changed.append("consented_at")
        for field, value in (
            ("external_study_id", external_study_id),
            ("external_session_id", external_session_id),
        ):
            if value and not getattr(p, field):
                setattr(p, field, value[:128])
                changed.append(field)
        if changed:
            p.save(update_fields=changed)
    return p


def annotator_join(
    *,
    study: Study,
    token: str,
    prolific_pid: str = "",
    external_study_id: str = "",
    external_session_id: str = "",
    demographics: dict | None = None,
) -> Annotator:
    """Enter a study through its entry link, consenting to it.

    An invite link makes a new pseudonymous annotator; a Prolific link finds the
    annotator with that PID (so a return visit, even from another browser,
    continues the same session) and makes them on the first visit.
    """
    study_invite_check(study=study, token=token)
    entry_ids_clean(
        params={
            "PROLIFIC_PID": prolific_pid,
            "STUDY_ID": external_study_id,
            "SESSION_ID": external_session_id,
        }
    )
    if prolific_pid:
        pid = {"source": "prolific", "external_id": prolific_pid}
        annotator = annotator_by_external_id(**pid)
        if annotator is None:
            try:
                annotator = annotator_create(**pid)
            except IntegrityError:  # the same PID joining twice at once
                annotator = annotator_by_external_id(**pid)
        prolific_session_check(
            annotator=annotator, study=study, session_id=external_session_id
        )
    else:
        annotator = annotator_create(source="invite")
    participation_consent(
        annotator=annotator,
        study=study,
        token=token,
        demographics=demographics,
        external_study_id=external_study_id,
        external_session_id=external_session_id,
    )
    return annotator


def participation_start(*, participation: Participation) -> Participation:
    """Mark that the annotator has read the instructions and begun (idempotent)."""
    if participation.started_at is None:
        Participation.objects.filter(pk=participation.pk, started_at=None).update(
            started_at=timezone.now()
        )
        participation.refresh_from_db(fields=["started_at"])
    return participation


# No 0/O or 1/I/L: codes are read off the screen and typed.
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def completion_code_new() -> str:
    """A per-participation completion code nobody can guess from another one
    (12 random characters, about 59 bits), unlike a sequence number."""
    return "PAL-" + "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))


def participation_complete(*, participation: Participation) -> Participation:
    """Mark finished and fix the completion code shown (idempotent)."""
    with transaction.atomic():
        p = (
            Participation.objects.select_for_update(no_key=True)
            .select_related("study")
            .get(pk=participation.pk)
        )
        if p.completed_at is None:
            p.completed_at = timezone.now()
            p.completion_code = p.study.completion_code or completion_code_new()
            p.save(update_fields=["completed_at", "completion_code"])
    return p
