"""The rating page: the item due now, rating and skipping it (htmx partial or
plain form posts). The entry pages and the shared helpers live in
``annotation.studies.views``."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation import selectors, services
from annotation.models import Annotator, Participation, Study
from annotation.studies.forms import ScoreForm
from annotation.studies.views import (
    _annotator,
    _friendly_errors,
    _markdown,
    _redirect,
    _scale,
    _study,
    _url,
)
from core.exceptions import (
    Conflict,
    InvalidInput,
    NotMember,
)

# Leases the rating page holds at once: the current image and the next one, which
# it preloads so it appears the moment the current one is rated (the engine allows
# up to services.MAX_HOLD).
PAGE_LEASES = 2


TIMED_OUT = "This image timed out, so it was not rated. Here is the next one."


def _show_next(
    request: HttpRequest,
    study: Study,
    annotator: Annotator,
    participation: Participation | None,
    notice: str = "",
    page: services.PageClaim | None = None,
) -> HttpResponse:
    """Render the rating page (or its ``rater`` partial) for the item due now
    and the one after it (preloaded); finish the participation when nothing is
    left. ``page``: the claim was made already, with the progress
    (``assignment_claim_for_page``); the participation is then read only if it
    must be completed. Every kind of item is drawn by the same markup from the
    same ``Shown`` (``services.items``)."""
    if page is None:
        leases = services.assignment_claim(
            annotator=annotator, study=study, hold=PAGE_LEASES
        )
        rated, total = selectors.annotator_progress(annotator=annotator, study=study)
        item_due = True  # not known: ask
    else:
        leases, rated, total, item_due = page
    partial = "#rater" if request.htmx else ""
    context = {
        "study": study,
        "rated": rated,
        "total": total,
        "percent": round(100 * rated / total) if total else 100,
        "notice": notice,
    }
    shown, after = services.items_deal(
        annotator_id=annotator.pk,
        study=study,
        leases=leases,
        rated=rated,
        item_due=item_due,
    )
    if shown is None:
        if rated < total and selectors.annotator_may_get_more(
            annotator=annotator, study=study
        ):
            return render(request, "annotation/waiting.html" + partial, context)
        if participation is None:
            participation = services.participation_get_or_create(
                annotator=annotator, study=study
            )
        services.participation_complete(participation=participation)
        return _redirect(request, _url("done", study))
    context.update(
        shown=shown,
        rate_url=reverse("annotation:item_rate", args=[study.slug, shown.token]),
        skip_url=reverse("annotation:item_skip", args=[study.slug, shown.token]),
        image_url=reverse("media_item", args=[shown.media_token]),
        after_url=reverse("media_item", args=[after.media_token]) if after else "",
        scale=_scale(study),
    )
    if not partial:  # the fragment has no instructions dialog: no Markdown
        context["instructions"] = _markdown(study.instructions)
    return render(request, "annotation/rate.html" + partial, context)


def _participation_ready(
    study: Study, annotator: Annotator
) -> tuple[Participation, str | None]:
    """The participation, and where to send the annotator first if they are not
    at the rating stage (consent, instructions, done). Only staff can consent
    without the study's link, so only they are sent to the consent page."""
    p = services.participation_get_or_create(annotator=annotator, study=study)
    if p.consented_at is None:
        if not annotator.user.is_staff:
            raise NotMember()
        return p, _url("consent", study)
    if p.completed_at is not None:
        return p, _url("done", study)
    if p.started_at is None:
        return p, _url("instructions", study)
    return p, None


@require_GET
@_friendly_errors
def rate(request: HttpRequest, slug: str) -> HttpResponse:
    study = _study(slug)
    annotator = _annotator(request, study)
    participation, elsewhere = _participation_ready(study, annotator)
    if elsewhere:
        return _redirect(request, elsewhere)
    return _show_next(request, study, annotator, participation)


def _after_action(
    request: HttpRequest, study: Study, annotator: Annotator, notice: str
) -> HttpResponse:
    if not request.htmx:
        # Post/redirect/get: a reload never re-posts the form.
        if notice:
            messages.warning(request, notice)
        response = redirect(_url("rate", study))
        response.status_code = 303  # "see other": the browser follows with a GET
        return response
    # The claim with the progress in one statement (PostgreSQL); it answers
    # only for an annotator at the rating stage, else the ordinary path below.
    page = services.assignment_claim_for_page(
        annotator=annotator, study=study, hold=PAGE_LEASES
    )
    if page is not None:
        return _show_next(request, study, annotator, None, notice, page=page)
    participation, elsewhere = _participation_ready(study, annotator)
    if elsewhere:
        return _redirect(request, elsewhere)
    return _show_next(request, study, annotator, participation, notice)


@require_POST
@_friendly_errors
def item_rate(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    """Record the score for the item on screen, then show the next one. The
    token names a counted image or an uncounted item alike
    (``services.item_answer``); no answer here tells which it was.

    A double press posts the same score twice: the second is a no-op and
    renders the same next item.
    """
    study = _study(slug)
    annotator = _annotator(request, study)
    form = ScoreForm(request.POST)
    # The service looks the item up first: someone else's item is a 404 whatever
    # the body, and a missing score on one's own is a 400.
    score = form.cleaned_data["score"] if form.is_valid() else None
    notice = ""
    try:
        services.item_answer(token=token, annotator=annotator, score=score)
    except InvalidInput:
        raise InvalidInput("Please choose one of the rating buttons.") from None
    except Conflict as exc:
        notice = exc.message
        if services.item_timed_out(token=token, annotator=annotator):
            notice = TIMED_OUT
    return _after_action(request, study, annotator, notice)


@require_POST
@_friendly_errors
def item_skip(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    study = _study(slug)
    annotator = _annotator(request, study)
    notice = ""
    try:
        services.item_skip(token=token, annotator=annotator)
    except Conflict as exc:
        notice = exc.message
    return _after_action(request, study, annotator, notice)
