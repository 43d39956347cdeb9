"""The annotator's entry pages: join, consent, instructions, pause, finish (the
rating page itself is ``annotation.engine.views``), and the helpers both share.

Thin function views over ``annotation.services``. Every page works as plain
links and form posts; with JavaScript, htmx posts the rating forms and swaps in
the ``rater`` partial of ``annotation/rate.html`` (next image, progress) instead
of reloading. Service errors become friendly pages (``_friendly_errors``).
"""

from functools import wraps

import markdown
import nh3
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from annotation import selectors, services
from annotation.models import Annotator, Participation, Study
from annotation.studies.forms import ConsentForm
from core.exceptions import (
    AnnotatorNotActive,
    Conflict,
    NotFound,
    NotMember,
    NotPermitted,
    PalateError,
    StudyNotOpen,
)

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
# The studies this browser session entered through their own links. A session
# reaches only these (staff reach every study): whoever opens study B's link with
# someone's Prolific PID gets a session for study B, never for the studies that
# person joined elsewhere.
SCOPE_KEY = "palate_studies"
OTHER_STUDY = (
    "This browser was signed in through the link of another study. Please open "
    "the link you were given for this study."
)


class _NotJoined(NotPermitted):
    code = "not_joined"


# --- helpers --------------------------------------------------------------------


def _self_hosted_images_only(tag: str, attr: str, value: str) -> str | None:
    """nh3 attribute filter: an image may only come from this site (a path such
    as ``/media/...``), so instructions cannot embed a remote tracking pixel."""
    if tag == "img" and attr in ("src", "srcset"):
        if attr == "srcset" or not value.startswith("/") or value.startswith("//"):
            return None
    return value


def _markdown(text: str) -> str:
    """Researcher-written Markdown, sanitised (nh3 keeps only harmless tags, and
    images only from this site)."""
    html = markdown.markdown(text or "", extensions=["sane_lists"])
    clean = nh3.clean(html, attribute_filter=_self_hosted_images_only)
    return mark_safe(clean)  # sanitised just above


def _study(slug: str) -> Study:
    try:
        return Study.objects.get(slug=slug)
    except Study.DoesNotExist:
        raise NotFound("There is no study at this address.") from None


def _annotator(request: HttpRequest, study: Study) -> Annotator:
    """The signed-in annotator, if this session may reach ``study``."""
    if not request.user.is_authenticated:
        raise _NotJoined(
            "Please open the study link you were given (invite or Prolific link) "
            "to take part."
        )
    if not request.user.is_staff and study.pk not in _scope(request):
        raise NotMember(OTHER_STUDY)
    return services.annotator_get_or_create_for_user(request.user)


def _scope(request: HttpRequest) -> list[int]:
    return request.session.get(SCOPE_KEY, [])


def _scope_add(request: HttpRequest, study: Study) -> None:
    if study.pk not in _scope(request):
        request.session[SCOPE_KEY] = [*_scope(request), study.pk]


def _sign_in(request: HttpRequest, annotator: Annotator, study: Study) -> None:
    """Sign this browser in as ``annotator`` for ``study``. Signing in as another
    account starts a fresh session (``login`` flushes the old one), whose scope is
    this study alone."""
    if request.user != annotator.user:
        login(request, annotator.user, backend=MODEL_BACKEND)
        request.session[SCOPE_KEY] = []
    _scope_add(request, study)


def _entered(request: HttpRequest, slug: str) -> tuple[Study, Annotator, Participation]:
    """The study at ``slug``, the signed-in annotator and their participation in it:
    what every page after the entry link starts from."""
    study = _study(slug)
    annotator = _annotator(request, study)
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
    (NotMember, "Please use your study link"),
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


# --- pages ----------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    participations = []
    if request.user.is_authenticated and hasattr(request.user, "annotator"):
        participations = request.user.annotator.participations.select_related("study")
        if not request.user.is_staff:
            participations = participations.filter(study__in=_scope(request))
    return render(request, "home.html", {"participations": participations})


def _consent_page(
    request: HttpRequest,
    study: Study,
    form: ConsentForm,
    *,
    action: str,
    hidden: dict,
    returning: bool = False,
) -> HttpResponse:
    """The consent form (or, for a returning participant, a Continue button),
    warning when this browser is signed in as someone else."""
    signed_in_as = ""
    if request.user.is_authenticated and hidden.get("PROLIFIC_PID"):
        known = getattr(request.user, "annotator", None)
        if known is None or known.external_id != hidden["PROLIFIC_PID"]:
            signed_in_as = (
                getattr(known, "public_id", "") or request.user.get_username()
            )
    return render(
        request,
        "annotation/consent.html",
        {
            "study": study,
            "form": form,
            "action": action,
            "hidden": hidden,
            "returning": returning,
            "signed_in_as": signed_in_as,
            "consent_html": _markdown(study.consent_text),
        },
    )


@require_http_methods(["GET", "POST"])
@_friendly_errors
def join(request: HttpRequest, slug: str) -> HttpResponse:
    """Entry link: ``/s/<slug>/join?t=<invite token>`` and, from Prolific,
    ``&PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...``.

    A GET never creates an account and never signs anyone in (link previews and
    crawlers open links, and any web page can make a browser open one): it shows
    the consent form, or for a returning Prolific participant in a new browser a
    Continue button; the POST (CSRF-protected) does the rest. A browser already
    signed in as the same person goes straight on. A returning PID continues only
    with the Prolific SESSION_ID that began the study, and the session it gets
    reaches this study alone.
    """
    study = _study(slug)
    data = request.POST if request.method == "POST" else request.GET
    ids = services.entry_ids_clean(params=data)
    token = data.get("t", "")
    services.study_invite_check(study=study, token=token)
    pid = ids["PROLIFIC_PID"]
    ext = {
        "external_study_id": ids["STUDY_ID"],
        "external_session_id": ids["SESSION_ID"],
    }
    if pid:
        known = selectors.annotator_by_external_id(source="prolific", external_id=pid)
    elif request.user.is_authenticated:
        known = services.annotator_get_or_create_for_user(request.user)
    else:
        known = None
    returning = False
    if known is not None:
        participation = (
            services.prolific_session_check(
                annotator=known, study=study, session_id=ids["SESSION_ID"]
            )
            if pid
            else selectors.participation_of(annotator=known, study=study)
        )
        returning = bool(participation and participation.consented_at)
        if returning and (request.method == "POST" or request.user == known.user):
            _sign_in(request, known, study)
            services.participation_consent(
                annotator=known, study=study, consent=False, **ext
            )
            return redirect(_url("rate", study))
    form = ConsentForm(request.POST or None, study=study)
    if request.method == "POST" and form.is_valid():
        if known is not None:
            services.participation_consent(
                annotator=known,
                study=study,
                token=token,
                demographics=form.demographics(),
                **ext,
            )
        else:
            known = services.annotator_join(
                study=study,
                token=token,
                prolific_pid=pid,
                demographics=form.demographics(),
                **ext,
            )
        _sign_in(request, known, study)
        return redirect(_url("rate", study))
    hidden = {"t": token, **{k: v for k, v in ids.items() if v}}
    return _consent_page(
        request,
        study,
        form,
        action=_url("join", study),
        hidden=hidden,
        returning=returning,
    )


@require_http_methods(["GET", "POST"])
@_friendly_errors
def consent(request: HttpRequest, slug: str) -> HttpResponse:
    """Consent for staff previewing a study (staff need no link). Anyone else
    joins through the study's own link (``join``); here they need its invite
    token too, so this page never admits a non-member."""
    study = _study(slug)
    if not request.user.is_authenticated:
        raise _NotJoined(
            "Please open the study link you were given (invite or Prolific link) "
            "to take part."
        )
    annotator = services.annotator_get_or_create_for_user(request.user)
    data = request.POST if request.method == "POST" else request.GET
    token = data.get("t", "")
    # Checked here, not only on a first consent: a member of this study whose
    # browser was scoped to another study must come back through this study's
    # link, not widen the scope with a bare POST.
    services.participation_admission_check(
        annotator=annotator, study=study, token=token
    )
    form = ConsentForm(request.POST or None, study=study)
    if request.method == "POST" and form.is_valid():
        services.participation_consent(
            annotator=annotator,
            study=study,
            token=token,
            demographics=form.demographics(),
        )
        _scope_add(request, study)
        return redirect(_url("rate", study))
    return _consent_page(
        request,
        study,
        form,
        action=_url("consent", study),
        hidden={"t": token} if token else {},
    )


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


@require_http_methods(["GET", "POST"])
@_friendly_errors
def pause(request: HttpRequest, slug: str) -> HttpResponse:
    """Take a break: the annotator's images are kept for them (their leases are
    extended). With JavaScript the rating page posts here and shows an overlay
    (204); without, this is the pause screen."""
    study = _study(slug)
    annotator = _annotator(request, study)
    if request.method == "POST":
        services.participation_pause(annotator=annotator, study=study)
        if request.htmx:
            return HttpResponse(status=204)
    return render(
        request,
        "annotation/pause.html",
        {"study": study, "hold_minutes": services.PAUSE_HOLD_SECONDS // 60},
    )


@require_POST
@_friendly_errors
def resume(request: HttpRequest, slug: str) -> HttpResponse:
    study = _study(slug)
    annotator = _annotator(request, study)
    services.participation_resume(annotator=annotator, study=study)
    if request.htmx:
        return HttpResponse(status=204)
    return redirect(_url("rate", study))


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
