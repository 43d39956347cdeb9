"""Writes of the taste portrait: a study's settings, a participant's answer."""

from __future__ import annotations

from django.db import transaction

from annotation.engine.models import Rating
from annotation.studies.models import Annotator, Image, Study
from core.exceptions import InvalidInput

from .models import PortraitFeedback, PortraitSettings


def portrait_settings_update(
    *,
    study: Study,
    enabled: bool,
    before_completion_redirect: bool,
    min_ratings: int,
    user=None,
) -> PortraitSettings:
    if not 5 <= min_ratings <= 10_000:
        raise InvalidInput("The minimum number of ratings must be 5 to 10,000.")
    with transaction.atomic():
        settings, _ = PortraitSettings.objects.select_for_update().get_or_create(
            study=study
        )
        settings.enabled = enabled
        settings.before_completion_redirect = before_completion_redirect
        settings.min_ratings = min_ratings
        settings.updated_by = user
        settings.save()
    return settings


def portrait_feedback_record(
    *,
    study: Study,
    annotator: Annotator,
    image_id: int,
    answer: str,
    side: str,
    predicted: float | None,
    spread: float | None,
    version_id: int | None,
    n_ratings: int,
) -> PortraitFeedback:
    """Store (or replace) the participant's answer on a predicted image: an
    image of this study they have not rated. Never a rating."""
    if answer not in PortraitFeedback.Answer.values:
        raise InvalidInput("Please use one of the two buttons.")
    if side not in PortraitFeedback.Side.values:
        raise InvalidInput("Please use one of the two buttons.")
    with transaction.atomic():
        if not Image.objects.filter(pk=image_id, study=study).exists():
            raise InvalidInput("That image is not part of this study.")
        if Rating.objects.filter(annotator=annotator, image_id=image_id).exists():
            raise InvalidInput("You rated that image yourself.")
        row, _ = PortraitFeedback.objects.update_or_create(
            annotator=annotator,
            image_id=image_id,
            defaults={
                "study": study,
                "answer": answer,
                "side": side,
                "predicted": predicted,
                "spread": spread,
                "version_id": version_id,
                "n_ratings": n_ratings,
            },
        )
    return row
