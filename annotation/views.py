"""The annotator's pages: join, consent, instructions, rate, finish.

Thin function views over ``annotation.services``. Every page works as plain
links and form posts; with JavaScript, htmx posts the rating forms and swaps in
the ``rater`` partial of ``annotation/rate.html`` (next image, progress) instead
of reloading. Service errors become friendly pages (``_friendly_errors``).
"""

from functools import wraps

import markdown
import nh3
from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from core.exceptions import (
    AnnotatorNotActive,
    Conflict,
    InvalidInput,
    NotFound,
    NotPermitted,
    PalateError,
    StudyNotOpen,
)

from . import selectors, services
from .forms import ConsentForm, ScoreForm
from .models import Annotator, Participation, Study

# Leases the rating page holds at once: the current image and the next one, which
# it preloads so it appears the moment the current one is rated (the engine allows
# up to services.MAX_HOLD).
PAGE_LEASES = 2
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
TIMED_OUT = "This image timed out, so it was not rated. Here is the next one."


class _NotJoined(NotPermitted):
    code = "not_joined"


# --- helpers --------------------------------------------------------------------


def _markdown(text: str) -> str:
    """Researcher-written Markdown, sanitised (nh3 keeps only harmless tags)."""
    html = markdown.markdown(text or "", extensions=["sane_lists"])
    return mark_safe(nh3.clean(html))  # sanitised just above


def _study(slug: str) -> Study:
    try:
        return Study.objects.get(slug=slug)
    except Study.DoesNotExist:
        raise NotFound("There is no study at this address.") from None


def _annotator(request: HttpRequest) -> Annotator:
    if not request.user.is_authenticated:
        raise _NotJoined(
            "Please open the study link you were given (invite or Prolific link) "
            "to take part."
        )
    return services.annotator_get_or_create_for_user(request.user)


def _entered(request: HttpRequest, slug: str) -> tuple[Study, Annotator, Participation]:
    """The study at ``slug``, the signed-in annotator and their participation in it:
    what every page after the entry link starts from."""
    study = _study(slug)
    annotator = _annotator(request)
    participation = services.participation_get_or_create(
        annotator=annotator, study=study
    )
    return study, annotator, participation


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    """A redirect that also works for htmx requests (which follow it in place)."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _url(name: str, study: Study) -> str:
    return reverse(f"annotation:{name}", args=[study.slug])


_ERROR_TITLES = [
    (AnnotatorNotActive, "Your account is paused"),
    (StudyNotOpen, "This study is closed"),
    (_NotJoined, "Please use your study link"),
    (NotFound, "Not found"),
    (Conflict, "That did not work"),
    (PalateError, "Something is not right"),
]


def _friendly_errors(view):
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except PalateError as exc:
            title = next(t for cls, t in _ERROR_TITLES if isinstance(exc, cls))
            if isinstance(exc, AnnotatorNotActive) and "paused" not in exc.message:
                title = "Your account is not active"
            template = "annotation/error.html"
            if request.htmx:
                template += "#message"
            return render(
                request,
                template,
                {"title": title, "message": exc.message, "code": exc.code},
                status=exc.http_status,
            )

    return wrapper


def _consent_page(
    request: HttpRequest, study: Study, form: ConsentForm, action: str, hidden: dict
) -> HttpResponse:
    return render(
        request,
        "annotation/consent.html",
        {
            "study": study,
            "form": form,
            "action": action,
            "hidden": hidden,
            "consent_html": _markdown(study.consent_text),
        },
    )


def _scale(study: Study) -> list[dict]:
    """The scale buttons with their keyboard keys: the digit itself when every
    value is a digit, else the button's position (1..9, then 0)."""
    points = study.scale_points
    values = [v for v, _ in points]
    if min(values) >= 0 and max(values) <= 9:
        keys = [str(v) for v in values]
    elif len(points) <= 10:
        keys = [str((i + 1) % 10) for i in range(len(points))]
    else:
        keys = [""] * len(points)
    return [
        {"value": v, "label": label, "key": key}
        for (v, label), key in zip(points, keys, strict=True)
    ]


def _show_next(
    request: HttpRequest,
    study: Study,
    annotator: Annotator,
    participation: Participation,
    notice: str = "",
) -> HttpResponse:
    """Render the rating page (or its ``rater`` partial) for the annotator's
    current lease; finish the participation when nothing is left."""
    leases = services.assignment_claim(
        annotator=annotator, study=study, hold=PAGE_LEASES
    )
    rated, total = selectors.annotator_progress(annotator=annotator, study=study)
    partial = "#rater" if request.htmx else ""
    context = {
        "study": study,
        "rated": rated,
        "total": total,
        "percent": round(100 * rated / total) if total else 100,
        "notice": notice,
    }
    if not leases:
        if rated < total and selectors.annotator_may_get_more(
            annotator=annotator, study=study
        ):
            return render(request, "annotation/waiting.html" + partial, context)
        services.participation_complete(participation=participation)
        return _redirect(request, _url("done", study))
    context.update(
        current=leases[0],
        next_image=leases[1].image if len(leases) > 1 else None,
        scale=_scale(study),
        instructions=_markdown(study.instructions),
    )
    return render(request, "annotation/rate.html" + partial, context)


def _participation_ready(
    study: Study, annotator: Annotator
) -> tuple[Participation, str | None]:
    """The participation, and where to send the annotator first if they are not
    at the rating stage (consent, instructions, done)."""
    p = services.participation_get_or_create(annotator=annotator, study=study)
    if p.consented_at is None:
        return p, _url("consent", study)
    if p.completed_at is not None:
        return p, _url("done", study)
    if p.started_at is None:
        return p, _url("instructions", study)
    return p, None


# --- pages ----------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    participations = []
    if request.user.is_authenticated and hasattr(request.user, "annotator"):
        participations = request.user.annotator.participations.select_related("study")
    return render(request, "home.html", {"participations": participations})


@require_http_methods(["GET", "POST"])
@_friendly_errors
def join(request: HttpRequest, slug: str) -> HttpResponse:
    """Entry link: ``/s/<slug>/join?t=<invite token>`` and, from Prolific,
    ``&PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...``.

    Opening the link never creates an account (link previews and crawlers open
    links too): the account is made when the consent form is posted.
    """
    study = _study(slug)
    data = request.POST if request.method == "POST" else request.GET
    entry = {
        "t": data.get("t", ""),
        "PROLIFIC_PID": data.get("PROLIFIC_PID", "").strip(),
        "STUDY_ID": data.get("STUDY_ID", "").strip(),
        "SESSION_ID": data.get("SESSION_ID", "").strip(),
    }
    services.study_invite_check(study=study, token=entry["t"])
    ids = {
        "external_study_id": entry["STUDY_ID"],
        "external_session_id": entry["SESSION_ID"],
    }
    pid = entry["PROLIFIC_PID"]
    known = None
    if pid:
        known = selectors.annotator_by_external_id(source="prolific", external_id=pid)
    elif request.user.is_authenticated:
        known = _annotator(request)
    if known is not None:
        # A returning visitor: continue where they left off, in any browser.
        if request.user != known.user:
            login(request, known.user, backend=MODEL_BACKEND)
        services.participation_consent(
            annotator=known, study=study, consent=False, **ids
        )
        if request.method == "GET":
            return redirect(_url("rate", study))
    form = ConsentForm(request.POST or None, study=study)
    if request.method == "POST" and form.is_valid():
        if known is not None:
            services.participation_consent(
                annotator=known, study=study, demographics=form.demographics(), **ids
            )
        else:
            known = services.annotator_join(
                study=study,
                token=entry["t"],
                prolific_pid=pid,
                demographics=form.demographics(),
                **ids,
            )
            login(request, known.user, backend=MODEL_BACKEND)
        return redirect(_url("rate", study))
    hidden = {k: v for k, v in entry.items() if v}
    return _consent_page(request, study, form, _url("join", study), hidden)


@require_http_methods(["GET", "POST"])
@_friendly_errors
def consent(request: HttpRequest, slug: str) -> HttpResponse:
    """Consent for someone already signed in (staff, or an annotator of another
    study) who has not yet agreed to this one."""
    study = _study(slug)
    annotator = _annotator(request)
    form = ConsentForm(request.POST or None, study=study)
    if request.method == "POST" and form.is_valid():
        services.participation_consent(
            annotator=annotator, study=study, demographics=form.demographics()
        )
        return redirect(_url("rate", study))
    return _consent_page(request, study, form, _url("consent", study), {})


@require_GET
@_friendly_errors
def instructions(request: HttpRequest, slug: str) -> HttpResponse:
    study, annotator, participation = _entered(request, slug)
    if participation.consented_at is None:
        return redirect(_url("consent", study))
    return render(
        request,
        "annotation/instructions.html",
        {
            "study": study,
            "participation": participation,
            "instructions": _markdown(study.instructions),
            "scale": _scale(study),
        },
    )


@require_POST
@_friendly_errors
def start(request: HttpRequest, slug: str) -> HttpResponse:
    study, annotator, participation = _entered(request, slug)
    if participation.consented_at is None:
        return redirect(_url("consent", study))
    services.participation_start(participation=participation)
    return redirect(_url("rate", study))


@require_GET
@_friendly_errors
def rate(request: HttpRequest, slug: str) -> HttpResponse:
    study = _study(slug)
    annotator = _annotator(request)
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
    participation, elsewhere = _participation_ready(study, annotator)
    if elsewhere:
        return _redirect(request, elsewhere)
    return _show_next(request, study, annotator, participation, notice)


@require_POST
@_friendly_errors
def rate_submit(request: HttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    """Record the score, then show the next image.

    A double press posts the same score twice: the second is a no-op in
    ``rating_submit`` and renders the same next image.
    """
    study = _study(slug)
    annotator = _annotator(request)
    form = ScoreForm(request.POST)
    if not form.is_valid():
        raise InvalidInput("Please choose one of the rating buttons.")
    notice = ""
    try:
        services.rating_submit(
            assignment_id=assignment_id,
            annotator=annotator,
            score=form.cleaned_data["score"],
        )
    except Conflict as exc:
        notice = exc.message
        if selectors.assignment_timed_out(
            assignment_id=assignment_id, annotator=annotator
        ):
            notice = TIMED_OUT
    return _after_action(request, study, annotator, notice)


@require_POST
@_friendly_errors
def skip(request: HttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    study = _study(slug)
    annotator = _annotator(request)
    notice = ""
    try:
        services.assignment_skip(assignment_id=assignment_id, annotator=annotator)
    except Conflict as exc:
        notice = exc.message
    return _after_action(request, study, annotator, notice)


@require_GET
@_friendly_errors
def pause(request: HttpRequest, slug: str) -> HttpResponse:
    """The pause screen for browsers without JavaScript (with it, pausing is an
    overlay on the rating page)."""
    study = _study(slug)
    _annotator(request)
    return render(request, "annotation/pause.html", {"study": study})


@require_GET
@_friendly_errors
def done(request: HttpRequest, slug: str) -> HttpResponse:
    study, annotator, participation = _entered(request, slug)
    if participation.completed_at is None:
        return redirect(_url("rate", study))
    rated, _ = selectors.annotator_progress(annotator=annotator, study=study)
    completion_url = study.completion_url.replace(
        "{code}", participation.completion_code
    )
    return render(
        request,
        "annotation/done.html",
        {
            "study": study,
            "participation": participation,
            "rated": rated,
            "completion_url": completion_url,
        },
    )
