"""The two hottest API endpoints without DRF's request cycle.

``POST /studies/{id}/assignments/next/`` and ``POST /assignments/{id}/rating/`` run
once per rating, so their fixed cost decides the platform's throughput. Here a
well-formed token request with a JSON (or form) body is answered by a plain Django
view: one raw query finds the token, its user and the annotator; the engine does
its work; the answer is built by hand with exactly the fields, formats and status
codes of the DRF views (``tests/annotation/test_api_hot.py`` compares them).

``POST /assignments/{id}/rating/?next=1`` rates and takes the next: on
PostgreSQL one statement (``palate_submit_next``: the submit, then the claim,
one transaction, one commit) for the common case; the rating alone when the
query string is empty or ``next=0``.

Everything else (session authentication, a missing or unknown token, a body that
is not a whole-number score, another content type, an ``Accept`` that does not
take JSON, a study that does not exist, an account without an annotator) is handed
unchanged to the DRF view in ``views.py``, which answers as it always has. That
view also stays the schema declaration: the fast views carry its ``cls`` so
drf-spectacular documents them at ``/api/v1/schema/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection
from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils import timezone
from django.utils.encoding import iri_to_uri
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authtoken.models import Token

from annotation import services
from annotation.api.authentication import token_key_plausible
from annotation.engine.api import views as drf_views
from annotation.engine.item_tokens import ASSIGNMENT, item_resolve
from annotation.engine.services import engine_sql
from annotation.engine.services.items import Answer, Shown, shown_lease_row
from annotation.models import Annotator, Study
from core.exceptions import NotFound, NotPermitted, PalateError

_JSON = "application/json"
_WHOLE = re.compile(r"\s*-?\d{1,6}\s*")


def _columns(model) -> list[str]:
    return [f.column for f in model._meta.concrete_fields]


_token_sql: str | None = None


def _token_query() -> str:
    """Token -> user -> annotator in one statement (built once: column lists come
    from the models, so added fields need no change here)."""
    global _token_sql
    if _token_sql is None:
        user_model = get_user_model()
        cols = [f"u.{c}" for c in _columns(user_model)]
        cols += [f"a.{c}" for c in _columns(Annotator)]
        _token_sql = (
            f"SELECT {', '.join(cols)} FROM {Token._meta.db_table} t "
            f"JOIN {user_model._meta.db_table} u ON u.id = t.user_id "
            f"JOIN {Annotator._meta.db_table} a ON a.user_id = u.id "
            "WHERE t.key = %s"
        )
    return _token_sql


def token_annotator(request: HttpRequest) -> Annotator | None:
    """The annotator behind ``Authorization: Token <key>``, user attached, or None
    when the DRF view should decide (no such header, malformed, unknown key,
    inactive user, no annotator yet): it then answers exactly as before."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "token":
        return None
    if not token_key_plausible(parts[1]):
        return None
    with connection.cursor() as cursor:
        cursor.execute(_token_query(), [parts[1]])
        row = cursor.fetchone()
    if row is None:
        return None
    user_model = get_user_model()
    n = len(user_model._meta.concrete_fields)
    user = user_model.from_db(connection.alias, _columns(user_model), row[:n])
    if not user.is_active:
        return None
    annotator = Annotator.from_db(connection.alias, _columns(Annotator), row[n:])
    annotator.user = user
    return annotator


def _accepts_json(request: HttpRequest) -> bool:
    accept = request.META.get("HTTP_ACCEPT", "")
    return not accept or "*/*" in accept or _JSON in accept


def _iso(value: datetime | None, tz) -> str | None:
    """DRF's DateTimeField output: ISO 8601 in the current time zone ``tz``
    (looked up once per answer: the lookup was most of this), UTC as Z."""
    if value is None:
        return None
    text = timezone.localtime(value, tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _json(data, status: int = 200) -> HttpResponse:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return HttpResponse(body, status=status, content_type=_JSON)


def _error(exc: PalateError) -> HttpResponse:
    return _json({"detail": exc.message, "code": exc.code}, status=exc.http_status)


_SENTINEL = "PalateMediaToken0"
_media_paths: dict[tuple, tuple[str, str, bool]] = {}


def _media_parts(media_token: str) -> tuple[str, str, bool]:
    """``reverse("media_item")`` around the token, reversed once per script
    prefix and URLconf (a ``reverse()`` was about a tenth of the claim view's
    CPU). Media tokens are URL-safe base64, which ``reverse()`` leaves as they
    are. The flag: whether ``build_absolute_uri`` of such a path is the
    request's scheme and host before it (one leading slash, no dot segment,
    query or fragment, nothing ``iri_to_uri`` would change)."""
    key = (get_script_prefix(), get_urlconf())
    parts = _media_paths.get(key)
    if parts is None:
        head, tail = reverse("media_item", args=[_SENTINEL]).split(_SENTINEL)
        path = head + _SENTINEL + tail
        plain = (
            path[:1] == "/"
            and path[1:2] != "/"
            and not any(s in path for s in ("/./", "/../", "?", "#"))
            and iri_to_uri(path) == path
        )
        parts = _media_paths[key] = (head, tail, plain)
    return parts


def media_path(media_token: str) -> str:
    """``reverse("media_item", args=[media_token])``."""
    head, tail, _ = _media_parts(media_token)
    return head + media_token + tail


def media_url(request: HttpRequest, media_token: str) -> str:
    """``request.build_absolute_uri(media_path(media_token))``: for a plain
    path (``_media_parts``) what Django's "simple, most common case" returns
    (the request's scheme and validated host, then the path, which
    ``iri_to_uri`` leaves as it is), without its URL parsing and quoting."""
    head, tail, plain = _media_parts(media_token)
    if plain:
        return request._current_scheme_host + head + media_token + tail
    return request.build_absolute_uri(head + media_token + tail)


def assignment_data(request: HttpRequest, shown: Shown, tz=None) -> dict:
    """``AssignmentSerializer``'s fields, built without it."""
    tz = tz or timezone.get_current_timezone()
    return {
        "id": shown.token,
        "study": shown.study_id,
        "image_url": media_url(request, shown.media_token),
        "image_width": shown.width,
        "image_height": shown.height,
        "status": shown.status,
        "leased_at": _iso(shown.leased_at, tz),
        "expires_at": _iso(shown.expires_at, tz),
    }


def rating_data(answer: Answer, tz=None) -> dict:
    """``RatingSerializer``'s fields, built without it."""
    return {
        "assignment": answer.token,
        "study": answer.study_id,
        "score": answer.score,
        "time_on_item_ms": answer.time_on_item_ms,
        "created_at": _iso(answer.created_at, tz or timezone.get_current_timezone()),
    }


def _fast(drf_view: Callable) -> Callable:
    """Mark a plain view as the fast path of ``drf_view``: same URL, same schema."""

    def decorate(view: Callable) -> Callable:
        view = csrf_exempt(view)
        # drf-spectacular (through DRF's EndpointEnumerator) documents a URL whose
        # callback has ``cls``; it then inspects that class, i.e. the DRF view.
        view.cls = drf_view.cls
        view.initkwargs = drf_view.initkwargs
        view.__doc__ = drf_view.__doc__
        return view

    return decorate


def _token_key(request: HttpRequest) -> str | None:
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0].lower() != "token":
        return None
    return parts[1] if token_key_plausible(parts[1]) else None


def _shown_response(request: HttpRequest, shown: Shown | None) -> HttpResponse:
    if shown is None:
        return HttpResponse(status=204)
    return _json(assignment_data(request, shown))


def _fast_request(request: HttpRequest) -> bool:
    return request.method == "POST" and _accepts_json(request)


@_fast(drf_views.assignment_next)
def assignment_next(request: HttpRequest, study_id: int) -> HttpResponse:
    """SQL path (one statement) when enabled; when it answers
    ``NEEDS_PYTHON_ENGINE``, the Python path without running it again."""
    key = _token_key(request) if _fast_request(request) else None
    if key is None:
        return drf_views.assignment_next(request, study_id=study_id)
    if not engine_sql.enabled():
        return _next_python(request, study_id, sql_first=True)
    # One statement: token, annotator, locks, claim, and whether an uncounted
    # item is due (the rating page's schedule: items.items_deal).
    outcome, annotator_id, rows, page = engine_sql.claim_with_progress(
        token=key,
        study_id=study_id,
        hold=1,
        now=timezone.now(),
        starts=services.starts_draw(1),
    )
    if outcome == engine_sql.UNKNOWN_TOKEN_OR_STUDY:
        return drf_views.assignment_next(request, study_id=study_id)
    if outcome == engine_sql.NEEDS_PYTHON_ENGINE:
        return _next_python(request, study_id, sql_first=False)
    return _shown_response(request, _dealt(study_id, outcome, annotator_id, rows, page))


def _dealt(study_id: int, outcome: str, annotator_id: int, rows, page) -> Shown | None:
    """What a claim that ``palate_claim`` answered (``ok`` or ``none``) shows:
    its lease as it is when no uncounted item is due, else the rating page's
    schedule (``items_deal``; with no lease, a pending item or nothing)."""
    if outcome == "ok" and not page[2]:
        return shown_lease_row(study_id, engine_sql.lease_row(rows[0]))
    shown, _ = services.items_deal(
        annotator_id=annotator_id,
        study=Study.objects.get(pk=study_id),
        leases=engine_sql.leases_of(study_id, rows),
        rated=page[0],
        item_due=page[2],
    )
    return shown


def _next_python(request: HttpRequest, study_id: int, *, sql_first: bool):
    annotator = token_annotator(request)
    study = Study.objects.filter(pk=study_id).first() if annotator else None
    if study is None:
        return drf_views.assignment_next(request, study_id=study_id)
    try:
        shown = services.item_next(
            annotator=annotator, study=study, sql_first=sql_first
        )
    except PalateError as exc:
        return _error(exc)
    return _shown_response(request, shown)


def _score(request: HttpRequest) -> int | None:
    """The score of a JSON or form body when it is plainly a whole number; None
    sends the request to the DRF view and its validation messages."""
    ctype = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if ctype == _JSON:
        try:
            value = json.loads(request.body)
        except ValueError:
            return None
        value = value.get("score") if isinstance(value, dict) else None
    elif ctype == "application/x-www-form-urlencoded":
        value = request.POST.get("score")
        if value is not None and _WHOLE.fullmatch(value):
            value = int(value)
    else:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _counted(token: str) -> int | None:
    """The assignment a token names, when it names one (the SQL fast path)."""
    try:
        kind, pk = item_resolve(token)
    except NotFound:
        return None
    return pk if kind == ASSIGNMENT else None


def _chain(request: HttpRequest) -> bool | None:
    """``?next=1`` (rate and take the next), absent or 0 (the rating alone), or
    None for any other value: the DRF view refuses it."""
    query = request.META.get("QUERY_STRING")
    if not query:
        return False
    if query == "next=1":  # what clients send: no QueryDict to parse
        return True
    try:
        return drf_views.next_wanted(request.GET)
    except PalateError:
        return None


@_fast(drf_views.rating_create)
def rating_create(request: HttpRequest, token: str) -> HttpResponse:
    """As ``assignment_next``: ``palate_submit`` (or, with ``?next=1``,
    ``palate_submit_next``) at most once per request."""
    score = _score(request) if _fast_request(request) else None
    key = _token_key(request) if score is not None else None
    chain = _chain(request) if key is not None else None
    if chain is None:
        return drf_views.rating_create(request, token=token)
    assignment_id = _counted(token)
    if not (
        assignment_id is not None
        and engine_sql.enabled()
        and engine_sql.plain_score(score)
    ):
        return _rate_python(request, token, score, sql_first=True, chain=chain)
    if chain:
        return _rate_next_sql(request, token, key, assignment_id, score)
    try:
        # One statement, its own transaction (quality control's bookkeeping
        # included): no BEGIN/COMMIT round trips.
        outcome, rating = engine_sql.submit(
            token=key,
            assignment_id=assignment_id,
            score=score,
            now=timezone.now(),
            savepoint=False,
        )
    except IntegrityError:
        # The Python path meets the same refusal and answers Conflict.
        outcome, rating = engine_sql.NEEDS_PYTHON_ENGINE, None
    if outcome == engine_sql.UNKNOWN_TOKEN_OR_STUDY:
        return drf_views.rating_create(request, token=token)
    if rating is None:
        return _rate_python(request, token, score, sql_first=False)
    return _json(rating_data(_answer(token, rating)), status=201)


def _answer(token: str, rating) -> Answer:
    return Answer(
        token,
        rating.study_id,
        rating.score,
        rating.time_on_item_ms,
        rating.created_at,
        True,
    )


def _rate_next_sql(request, token: str, key: str, assignment_id: int, score: int):
    """Rate and take the next in one statement (``palate_submit_next``). When
    the submit needs the Python engine, nothing was done: the Python path rates
    and then claims. When the claim needs it (or did not run), the rating is
    kept and only the claim runs in Python, ``palate_claim`` not again."""
    try:
        got = engine_sql.submit_next(
            token=key,
            assignment_id=assignment_id,
            score=score,
            now=timezone.now(),
            starts=services.starts_draw(1),
        )
    except IntegrityError:
        # One transaction, rolled back whole: the Python path does both.
        return _rate_python(request, token, score, sql_first=False, chain=True)
    if got.outcome == engine_sql.UNKNOWN_TOKEN_OR_STUDY:
        return drf_views.rating_create(request, token=token)
    if got.rating is None:
        return _rate_python(request, token, score, sql_first=False, chain=True)
    tz = timezone.get_current_timezone()
    data = rating_data(_answer(token, got.rating), tz)
    study_id = got.rating.study_id
    if got.claim in (None, engine_sql.NEEDS_PYTHON_ENGINE):
        annotator = token_annotator(request)
        if annotator is None:  # deactivated since the statement ran
            shown, error = None, NotPermitted("User inactive or deleted.")
        else:
            shown, error = services.item_next_after_answer(
                annotator=annotator, study_id=study_id, sql_first=got.claim is None
            )
    else:
        rows, page = got.rows, got.page
        shown = _dealt(study_id, got.claim, got.annotator_id, rows, page)
        error = None
    return _json(_with_next(request, data, shown, error, tz), status=201)


def _with_next(request, data: dict, shown: Shown | None, error, tz=None) -> dict:
    """The rating's fields with rate-and-next's ``next`` (and ``next_error``)."""
    data["next"] = assignment_data(request, shown, tz) if shown is not None else None
    if error is not None:
        data["next_error"] = drf_views.next_error_data(error)
    return data


def _rate_python(
    request: HttpRequest, token: str, score: int, *, sql_first: bool, chain=False
):
    annotator = token_annotator(request)
    if annotator is None:
        return drf_views.rating_create(request, token=token)
    try:
        answer = services.item_answer(
            token=token, annotator=annotator, score=score, sql_first=sql_first
        )
    except PalateError as exc:
        return _error(exc)  # a refused rating: nothing claimed
    data = rating_data(answer)
    if chain:
        shown, error = services.item_next_after_answer(
            annotator=annotator, study_id=answer.study_id
        )
        data = _with_next(request, data, shown, error)
    return _json(data, status=201 if answer.created else 200)
