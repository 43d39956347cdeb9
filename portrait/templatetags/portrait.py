"""The portrait on staff pages: ``{% staff_portrait study annotator %}`` on the
annotator's dashboard page (the same portrait the participant sees, without the
answer buttons), ``{% portrait_settings_card study %}`` on the study's page."""

from django import template

from ..forms import PortraitSettingsForm
from ..selectors import portrait_build, portrait_settings

register = template.Library()


@register.inclusion_tag("portrait/_staff.html")
def staff_portrait(study, annotator):
    settings = portrait_settings(study=study)
    p = portrait_build(
        study=study, annotator=annotator, min_ratings=settings.min_ratings
    )
    return {"study": study, "p": p, "settings": settings, "person": annotator}


@register.inclusion_tag("portrait/_settings_card.html", takes_context=True)
def portrait_settings_card(context, study):
    settings = portrait_settings(study=study)
    return {
        "study": study,
        "form": PortraitSettingsForm(instance=settings),
        "settings": settings,
        "csrf_token": context.get("csrf_token"),
    }
