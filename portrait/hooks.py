"""The portrait's links on the participant's pages (``annotation.hooks``):
the rating page's header while they rate, the completion page at the end."""

from __future__ import annotations

from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from .selectors import portrait_settings, portrait_visible


def participant_links(*, page: str, study, annotator, rated: int, **kwargs) -> dict:
    """One query (the study's settings), on full page loads only. The labels in
    the study's language, as the portrait is."""
    settings = portrait_settings(study=study)
    if not portrait_visible(settings=settings, study=study, annotator=annotator):
        return {}
    with translation.override(study.language):
        return _links(page, study, settings, rated)


def _links(page: str, study, settings, rated: int) -> dict:
    url = reverse("portrait:page", args=[study.slug])
    if page == "rate":
        # Shown from the start: the page says how many ratings are still needed
        # (with JavaScript the header is not redrawn after each rating).
        return {"links": [(url, _("Your taste"))]}
    if page == "done" and rated >= settings.min_ratings:
        return {
            "links": [(url, _("See the portrait of your taste"))],
            # The participant goes on with the button, after the portrait.
            "hold_redirect": bool(study.completion_url),
        }
    return {}
