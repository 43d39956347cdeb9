"""Thin views of the taste portrait: the participant's page and their one-click
answers (plain forms, no script needed), and the staff form for a study's
settings (shown on the study's dashboard page)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import translation
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
)

from annotation.hooks import participant_view
from annotation.studies.models import Annotator, Study
from core.exceptions import InvalidInput
from rewardmodel import inference

from . import selectors, services
from .forms import FeedbackForm, PortraitSettingsForm
from .tokens import feedback_image_id


@require_GET
@participant_view
def page(request: HttpRequest, *, study, annotator, participation) -> HttpResponse:
    """The participant's portrait, in the study's language (``Study.language``)."""
    settings = selectors.portrait_access_check(
        study=study, annotator=annotator, participation=participation
    )
    with translation.override(study.language):
        return _page(request, study, annotator, participation, settings)


def _page(request, study, annotator, participation, settings) -> HttpResponse:
    portrait = selectors.portrait_build(
        study=study, annotator=annotator, min_ratings=settings.min_ratings
    )
    done = participation.completed_at is not None
    completion_url = ""
    if done:
        completion_url = study.completion_url.replace(
            "{code}", participation.completion_code
        )
    return render(
        request,
        "portrait/page.html",
        {
            "study": study,
            "p": portrait,
            "participation": participation,
            "done": done,
            "completion_url": completion_url,
            "feedback": True,
        },
    )


@require_POST
@participant_view
def feedback(request: HttpRequest, *, study, annotator, participation):
    """One click: "this is me" or "this is not me" on a predicted image, stored
    with what the model said then; back to the portrait (post/redirect/get)."""
    settings = selectors.portrait_access_check(
        study=study, annotator=annotator, participation=participation
    )
    form = FeedbackForm(request.POST)
    if not form.is_valid():
        raise InvalidInput("Please use one of the two buttons.")
    image_id = feedback_image_id(form.cleaned_data["token"])
    n = selectors.rating_count(study=study, annotator=annotator)
    if n < settings.min_ratings:
        raise InvalidInput("Your portrait is not ready yet.")
    said = inference.predict(annotator=annotator, image_ids=[image_id], spread=True)
    services.portrait_feedback_record(
        study=study,
        annotator=annotator,
        image_id=image_id,
        answer=form.cleaned_data["answer"],
        side=form.cleaned_data["side"],
        predicted=said["scores"].get(image_id),
        spread=said.get("spread", {}).get(image_id),
        version_id=said["version"],
        n_ratings=n,
    )
    url = reverse("portrait:page", args=[study.slug])
    response = redirect(f"{url}#fb-{form.cleaned_data['token']}")
    response.status_code = 303
    return response


@staff_member_required
@require_GET
def staff_portrait(request: HttpRequest, study_id: int, annotator_id: int):
    """The portrait the participant sees (their answers, not the buttons), for
    the annotator's dashboard page: loaded into it by htmx, or a page of its own
    without JavaScript (the dashboard page's own queries stay as they were)."""
    study = get_object_or_404(Study, pk=study_id)
    person = get_object_or_404(Annotator, pk=annotator_id)
    settings = selectors.portrait_settings(study=study)
    context = {
        "study": study,
        "person": person,
        "settings": settings,
        "p": selectors.portrait_build(
            study=study, annotator=person, min_ratings=settings.min_ratings
        ),
    }
    template = "portrait/_staff.html" if request.htmx else "portrait/staff.html"
    return render(request, template, context)


@staff_member_required
@require_http_methods(["GET", "POST"])
def settings_update(request: HttpRequest, study_id: int) -> HttpResponse:
    """The study's portrait settings: the form (loaded into the study's
    dashboard page by htmx, or a page of its own without JavaScript) and its
    post. Invalid input is answered with the form and its errors; nothing
    changes."""
    study = get_object_or_404(Study, pk=study_id)
    current = selectors.portrait_settings(study=study)
    if request.method == "GET":
        template = (
            "portrait/_settings.html" if request.htmx else "portrait/settings.html"
        )
        form = PortraitSettingsForm(instance=current)
        return render(
            request, template, {"study": study, "form": form, "settings": current}
        )
    form = PortraitSettingsForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "portrait/settings.html",
            {"study": study, "form": form, "settings": current},
            status=400,
        )
    services.portrait_settings_update(
        study=study, user=request.user, **form.cleaned_data
    )
    messages.success(request, "Taste portrait settings saved.")
    return redirect(reverse("dashboard:study", args=[study.pk]) + "#portrait")
