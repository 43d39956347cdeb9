"""The hot lane (core.hot_lane): the two per-rating API requests through a shorter
middleware chain answer exactly as through every middleware, and nothing else
takes the lane."""

import io
import json
import logging
import sys

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import resolve, reverse
from rest_framework.authtoken.models import Token

from annotation.engine.api import hot
from core.hot_lane import LANE_SKIPS, PalateWSGIHandler, lane_middleware
from tests.factories import AnnotatorFactory, join, make_images

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def keep_test_connection():
    """As Django's test client: the handler's signals must not close the test's
    connection (its transaction is the test's)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def environ(method, path, *, token=None, body=b"", cookie=None, **extra):
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "HTTP_ACCEPT": "*/*",
        "CONTENT_TYPE": "application/json" if body else "",
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        **extra,
    }
    if token is not None:
        env["HTTP_AUTHORIZATION"] = f"Token {token}"
    if cookie is not None:
        env["HTTP_COOKIE"] = cookie
    return env


def call(app, env):
    started = []
    chunks = app(env, lambda status, headers, exc_info=None: started.append(headers))
    try:
        body = b"".join(chunks)
    finally:
        chunks.close()
    return chunks.status_code, dict(started[0]), body


def token_for(annotator):
    return Token.objects.get_or_create(user=annotator.user)[0].key


def same_answer(lane, full):
    """Same status, same headers (Content-Length: each its own body's), and
    bodies of the same shape."""
    (s1, h1, b1), (s2, h2, b2) = lane, full
    assert s1 == s2
    assert h1.keys() == h2.keys()
    for name in h1:
        if name != "Content-Length":
            assert h1[name] == h2[name], name
    if "Content-Length" in h1:
        assert int(h1["Content-Length"]) == len(b1)
    if b1:
        j1, j2 = json.loads(b1), json.loads(b2)
        assert type(j1) is type(j2)
        if isinstance(j1, dict):
            assert j1.keys() == j2.keys()
    else:
        assert not b2


def test_lane_takes_only_token_posts_to_the_two_paths(study):
    app = PalateWSGIHandler()
    claim = f"/api/v1/studies/{study.pk}/assignments/next/"
    rate = "/api/v1/assignments/abc/rating/"

    def lane(env):
        return app.in_lane(app.request_class(env))

    assert lane(environ("POST", claim, token="k"))
    assert lane(environ("POST", rate, token="k"))
    assert not lane(environ("GET", claim, token="k"))
    assert not lane(environ("POST", claim))
    assert not lane(environ("POST", claim, token="k", cookie="sessionid=x"))
    assert not lane(environ("POST", "/api/v1/assignments/abc/skip/", token="k"))
    assert not lane(environ("POST", f"/api/v1/studies/{study.pk}/progress/", token="k"))
    assert not lane(environ("POST", claim + "x", token="k"))
    # Rate and take the next: the same path, a query string.
    assert lane(environ("POST", rate, token="k", QUERY_STRING="next=1"))
    assert not lane(environ("POST", rate, QUERY_STRING="next=1"))


def test_lane_paths_are_the_sites_own():
    """config.hot_urls names the same URLs and views as config.urls."""
    claim = reverse("api-assignment-next", kwargs={"study_id": 7})
    rate = reverse("api-rating", kwargs={"token": "t0k"})
    app = PalateWSGIHandler()
    for url, view in ((claim, hot.assignment_next), (rate, hot.rating_create)):
        assert resolve(url).func is view
        assert app._lane_resolver.resolve(url).func is view
        hot_match = resolve(url, urlconf="config.hot_urls")
        assert hot_match.func is view
        assert hot_match.url_name == resolve(url).url_name
        assert hot_match.kwargs == resolve(url).kwargs
        # The lane's match stands for the lane URLconf's (_Lane.resolve_request
        # resolves once): the same in every attribute a view or log reads.
        lane_match = app._lane_resolver.resolve(url)
        for attr in ("func", "args", "kwargs", "url_name", "route", "tried"):
            assert getattr(lane_match, attr) == getattr(hot_match, attr), attr
        assert repr(lane_match) == repr(hot_match)


def test_lane_middleware_is_middleware_less_the_skipped(settings):
    assert lane_middleware() == [
        "django.middleware.security.SecurityMiddleware",
        "core.middleware.SecurityHeadersMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
    assert LANE_SKIPS <= set(settings.MIDDLEWARE)  # each skip names a real one
    # A middleware added later runs in the lane unless it is named a skip.
    added = "django.middleware.gzip.GZipMiddleware"
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, added]
    assert lane_middleware()[-1] == added
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "clickjacking" not in m]
    assert "django.middleware.clickjacking.XFrameOptionsMiddleware" not in (
        lane_middleware()
    )


def test_lane_answers_as_every_middleware_does(study, caplog):
    """Claim, rating, the same rating again, another score (409), an unknown
    token (403), no such study (404), nothing left (204): the lane and the full
    chain give the same status and headers, and log the same lines."""
    lane, full = PalateWSGIHandler(), WSGIHandler()
    make_images(study, 4)
    people = [join(AnnotatorFactory(), study) for _ in range(2)]
    tokens = [token_for(a) for a in people]
    claim = f"/api/v1/studies/{study.pk}/assignments/next/"
    answers = []
    caplog.set_level(logging.WARNING, logger="django.request")
    for app, key in ((lane, tokens[0]), (full, tokens[1])):
        got = [call(app, environ("POST", claim, token=key))]
        item = json.loads(got[0][2])["id"]
        rate = f"/api/v1/assignments/{item}/rating/"
        got.append(call(app, environ("POST", rate, token=key, body=b'{"score": 4}')))
        got.append(call(app, environ("POST", rate, token=key, body=b'{"score": 4}')))
        got.append(call(app, environ("POST", rate, token=key, body=b'{"score": 5}')))
        got.append(call(app, environ("POST", claim, token="0" * 40)))
        got.append(
            call(
                app,
                environ("POST", "/api/v1/studies/999999/assignments/next/", token=key),
            )
        )
        answers.append(got)
    statuses = [a[0] for a in answers[0]]
    assert statuses == [200, 201, 200, 409, 403, 404]
    for one, other in zip(*answers, strict=True):
        same_answer(one, other)
    assert answers[0][0][1]["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in answers[0][0][1]
    # "Conflict: /api/v1/assignments/<token>/rating/" and the like, each path
    # its own annotator's.
    logged = [
        r.getMessage().split(":")[0]
        for r in caplog.records
        if r.name == "django.request"
    ]
    assert logged == ["Conflict", "Forbidden", "Not Found"] * 2
    # Nothing left for either (quota reached): 204 both ways.
    study.quota_per_annotator = 1
    study.save(update_fields=["quota_per_annotator"])
    same_answer(
        call(lane, environ("POST", claim, token=tokens[0])),
        call(full, environ("POST", claim, token=tokens[1])),
    )


def test_lane_answers_rate_and_next_as_every_middleware_does(study, caplog):
    """``?next=1``: the rating with the next item (201), the retry (200), a
    refused score (400, nothing claimed), a bad ``next`` (400), and the last
    image (next null): the lane and the full chain answer alike, log alike."""
    lane, full = PalateWSGIHandler(), WSGIHandler()
    make_images(study, 3)
    study.quota_per_annotator = 2
    study.save(update_fields=["quota_per_annotator"])
    people = [join(AnnotatorFactory(), study) for _ in range(2)]
    tokens = [token_for(a) for a in people]
    claim = f"/api/v1/studies/{study.pk}/assignments/next/"
    answers = []
    caplog.set_level(logging.WARNING, logger="django.request")
    for app, key in ((lane, tokens[0]), (full, tokens[1])):
        item = json.loads(call(app, environ("POST", claim, token=key))[2])["id"]
        rate = f"/api/v1/assignments/{item}/rating/"

        def chain(body, query="next=1", rate=rate, app=app, key=key):
            env = environ("POST", rate, token=key, body=body, QUERY_STRING=query)
            return call(app, env)

        got = [chain(b'{"score": 4}')]
        following = json.loads(got[0][2])["next"]["id"]
        got.append(chain(b'{"score": 4}'))
        got.append(chain(b'{"score": 99}'))
        got.append(chain(b'{"score": 4}', query="next=maybe"))
        rate = f"/api/v1/assignments/{following}/rating/"
        got.append(chain(b'{"score": 2}', rate=rate))
        answers.append(got)
    assert [a[0] for a in answers[0]] == [201, 200, 400, 400, 201]
    for one, other in zip(*answers, strict=True):
        same_answer(one, other)
    for got in answers:
        assert (
            json.loads(got[0][2])["next"]["id"] == json.loads(got[1][2])["next"]["id"]
        )
        assert json.loads(got[4][2])["next"] is None  # the quota reached
    logged = [
        r.getMessage().split(":")[0]
        for r in caplog.records
        if r.name == "django.request"
    ]
    assert logged == ["Bad Request"] * 4


def test_lane_keeps_the_https_redirect(study, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    lane, full = PalateWSGIHandler(), WSGIHandler()
    annotator = join(AnnotatorFactory(), study)
    key = token_for(annotator)
    claim = f"/api/v1/studies/{study.pk}/assignments/next/"
    redirected = call(lane, environ("POST", claim, token=key))
    assert redirected[0] == 301
    assert redirected[1]["Location"] == f"https://testserver{claim}"
    same_answer(redirected, call(full, environ("POST", claim, token=key)))
    make_images(study, 1)
    secure = call(
        lane, environ("POST", claim, token=key, **{"wsgi.url_scheme": "https"})
    )
    assert secure[0] == 200
    assert secure[1]["Strict-Transport-Security"].startswith("max-age=3600")


def test_media_path_is_reverse(settings):
    """hot.media_path: reverse("media_item") for any media token, under any
    script prefix and either URLconf."""
    from django.urls import set_script_prefix, set_urlconf

    from annotation.engine.item_tokens import ASSIGNMENT, MEDIA, item_token

    tokens = [item_token(kind=ASSIGNMENT, pk=pk, purpose=MEDIA) for pk in range(50)]
    tokens += ["-_", "a" * 22]
    try:
        for prefix in ("/", "/palate/"):
            for urlconf in (None, "config.hot_urls"):
                set_script_prefix(prefix)
                set_urlconf(urlconf)
                for token in tokens:
                    expected = reverse("media_item", args=[token])
                    assert hot.media_path(token) == expected
                    assert expected.startswith(prefix)
    finally:
        set_script_prefix("/")
        set_urlconf(None)


def test_media_url_is_build_absolute_uri(settings):
    """hot.media_url: request.build_absolute_uri of the media path, for any
    token, scheme and host, under script prefixes Django quotes or joins
    (a dot segment: its urljoin) as well as plain ones."""
    from django.test import RequestFactory
    from django.urls import set_script_prefix

    from annotation.engine.item_tokens import ASSIGNMENT, MEDIA, item_token

    settings.ALLOWED_HOSTS = ["*"]
    tokens = [item_token(kind=ASSIGNMENT, pk=pk, purpose=MEDIA) for pk in range(20)]
    tokens += ["-_", "a" * 22]
    factory = RequestFactory()
    requests = [
        factory.post("/", HTTP_HOST=host, secure=secure)
        for host in ("testserver", "127.0.0.1:8000", "[::1]:8443", "Example.ORG")
        for secure in (False, True)
    ]
    try:
        for prefix in ("/", "/palate/", "/pa lat\u00e9/", "/a/./b/", "/a/../b/"):
            set_script_prefix(prefix)
            for request in requests:
                for token in tokens:
                    expected = request.build_absolute_uri(hot.media_path(token))
                    assert hot.media_url(request, token) == expected
    finally:
        set_script_prefix("/")
