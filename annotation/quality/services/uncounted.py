"""Uncounted items put into one annotator's stream on request (e.g. a blind
comparison that another app wants this annotator to judge).

They are ordinary stream items of kind ``blind``: shown after the annotator's next
counted rating (the image after the one on screen is already preloaded; see
``items``), one after the other in the order given,
rated on the study's scale like any image, never a Rating (so no image's
``target_ratings`` bookkeeping sees them) and never folded into the quality
statistics. Whoever asked reads the answers back with
``selectors.uncounted_item_answers``; the annotator is never told why the image
is there.
"""

from __future__ import annotations

from django.db import transaction

from annotation.models import Annotator, Image, Participation, StreamItem, Study
from annotation.selectors import annotator_progress
from core.exceptions import InvalidInput

MAX_ITEMS = 10


def uncounted_items_create(
    *, annotator: Annotator, study: Study, images: list[Image], payload: dict
) -> list[StreamItem]:
    """One pending item per image, due after the next rating, in the order given."""
    if not images or len(images) > MAX_ITEMS:
        raise InvalidInput(f"Between 1 and {MAX_ITEMS} images.")
    if not Participation.objects.filter(
        annotator=annotator, study=study, consented_at__isnull=False
    ).exists():
        raise InvalidInput(f"Annotator {annotator} has not joined {study}.")
    rated, _ = annotator_progress(annotator=annotator, study=study)
    with transaction.atomic():
        return [
            StreamItem.objects.create(
                study=study,
                annotator=annotator,
                kind=StreamItem.Kind.BLIND,
                due_after=rated,
                image=image,
                payload=payload,
            )
            for image in images
        ]
