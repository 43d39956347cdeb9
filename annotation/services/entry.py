"""Entering a study through the browser: invite and Prolific links, consent,
demographics, starting and completing."""

import hmac
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.exceptions import InvalidInput, NotFound, StudyNotOpen

from ..models import Annotator, Participation, Study
from ..selectors import annotator_by_external_id
from .studies import annotator_create, participation_get_or_create

DEMOGRAPHIC_FIELDS = ("age_range", "gender", "country", "art_experience")


def study_invite_check(*, study: Study, token: str) -> None:
    """The entry link must carry the study's invite token and the study be open."""
    if not token or not hmac.compare_digest(str(token), study.invite_token):
        raise NotFound(
            "This link is not valid: please check the address you were given."
        )
    if study.status != Study.Status.OPEN:
        raise StudyNotOpen(f"The study '{study.name}' is not open for ratings.")


def participation_consent(
    *,
    annotator: Annotator,
    study: Study,
    demographics: dict | None = None,
    external_study_id: str = "",
    external_session_id: str = "",
    consent: bool = True,
    now: datetime | None = None,
) -> Participation:
    """Record consent (once), the answers to the study's demographics questions and
    the recruiting platform's ids. Calling it again changes only what was blank;
    ``consent=False`` records the ids alone (a returning Prolific visit)."""
    now = now or timezone.now()
    with transaction.atomic():
        p = participation_get_or_create(annotator=annotator, study=study)
        p = Participation.objects.select_for_update().get(pk=p.pk)
        changed = []
        if consent and p.consented_at is None:
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
        asked = set(study.demographics_fields or ()) & set(DEMOGRAPHIC_FIELDS)
        answers = {
            k: str(v)[:100] for k, v in (demographics or {}).items() if k in asked and v
        }
        if answers:
            a = Annotator.objects.select_for_update().get(pk=annotator.pk)
            a.demographics = {**a.demographics, **answers}
            a.save(update_fields=["demographics"])
            annotator.demographics = a.demographics
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
    if prolific_pid:
        if len(prolific_pid) > 128:
            raise InvalidInput("PROLIFIC_PID is too long.")
        pid = {"source": "prolific", "external_id": prolific_pid}
        annotator = annotator_by_external_id(**pid)
        if annotator is None:
            try:
                annotator = annotator_create(**pid)
            except IntegrityError:  # the same PID joining twice at once
                annotator = annotator_by_external_id(**pid)
    else:
        annotator = annotator_create(source="invite")
    participation_consent(
        annotator=annotator,
        study=study,
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


def participation_complete(*, participation: Participation) -> Participation:
    """Mark finished and fix the completion code shown (idempotent)."""
    with transaction.atomic():
        p = (
            Participation.objects.select_for_update()
            .select_related("study")
            .get(pk=participation.pk)
        )
        if p.completed_at is None:
            p.completed_at = timezone.now()
            p.completion_code = (
                p.study.completion_code or f"PAL-{p.study_id}-{p.pk:06d}"
            )
            p.save(update_fields=["completed_at", "completion_code"])
    return p
