"""A shorter middleware chain for the two requests made once per rating.

``POST /api/v1/studies/{id}/assignments/next/`` and ``POST
/api/v1/assignments/{token}/rating/`` with ``Authorization: Token ...`` and no
cookie (the rating with or without ``?next=1``: the lane matches the path,
not the query string) are what an API client sends per rating; through all
eleven middleware they cost about 0.45 ms of CPU each outside the view
(benchmarks/RESULTS.md, "Application CPU per rating, where it goes"). For
exactly those requests the WSGI handler runs the views behind ``MIDDLEWARE``
less ``LANE_SKIPS``: the middleware whose work such a request can see (today
six of eleven):

* ``SecurityMiddleware``: the HTTPS redirect, HSTS, nosniff, Referrer-Policy,
  Cross-Origin-Opener-Policy;
* ``core.middleware.SecurityHeadersMiddleware``: CSP and Permissions-Policy;
* ``SessionMiddleware`` and ``AuthenticationMiddleware``: nothing for the fast
  path (it reads neither), but a request the fast view hands to the DRF view
  (an unknown token, say) has its session looked at by DRF's session
  authentication, which adds ``Vary: Cookie``; both lazy until then;
* ``CommonMiddleware``: refused user agents, ``PREPEND_WWW``, Content-Length;
* ``XFrameOptionsMiddleware``: X-Frame-Options.

The others have nothing to do for them: WhiteNoise serves ``STATIC_URL`` only;
with no cookie ``MessageMiddleware`` reads and writes nothing (the API adds no
messages); the views are ``csrf_exempt`` and set no CSRF cookie; django-axes
acts only on a failed ``authenticate()``, which token authentication never
calls; htmx headers are not read by the API. A request with a cookie, another
method, path or authorization goes through every middleware as before.

Django's handler does the rest unchanged: ``request_started`` and
``request_finished`` (connection upkeep), exceptions into responses (the
project's JSON 404), and the log line of every answer of 400 or more.
``tests/test_hot_lane.py`` compares the headers with the full chain's.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.urls import Resolver404, URLResolver, set_urlconf
from django.urls.resolvers import RegexPattern
from django.utils.log import log_response
from django.utils.module_loading import import_string

# The middleware the lane leaves out, each with nothing to do for these
# requests (module docstring). A deny-list, so that a middleware added to
# MIDDLEWARE later (a rate limiter, say) runs in the lane too unless it is
# named here after the same check.
LANE_SKIPS = frozenset(
    {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django_htmx.middleware.HtmxMiddleware",
        "axes.middleware.AxesMiddleware",
    }
)
# The lane's URLs: the two hot patterns first, then everything (reverse() and
# the error handlers work as in ROOT_URLCONF).
LANE_URLCONF = "config.hot_urls"


class _Lane(BaseHandler):
    """``BaseHandler`` with the chain built from ``paths`` (``lane_middleware``)
    instead of ``MIDDLEWARE``."""

    def __init__(self, paths: list[str]):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response)
        for path in reversed(paths):
            try:
                mw = import_string(path)(handler)
            except MiddlewareNotUsed:
                continue
            if hasattr(mw, "process_view"):
                self._view_middleware.insert(0, mw.process_view)
            if hasattr(mw, "process_template_response"):
                self._template_response_middleware.append(mw.process_template_response)
            if hasattr(mw, "process_exception"):
                self._exception_middleware.append(mw.process_exception)
            handler = convert_exception_to_response(mw)
        self._middleware_chain = handler

    def resolve_request(self, request):
        """As ``BaseHandler.resolve_request`` with the lane's URLconf, whose
        match for a lane request is the one ``in_lane`` made already (its two
        patterns come first there: ``tests/test_hot_lane.py`` compares them),
        so the path is resolved once, not twice."""
        set_urlconf(request.urlconf)
        request.resolver_match = request.lane_match
        return request.lane_match


def lane_middleware() -> list[str]:
    """The lane's chain: ``MIDDLEWARE`` without ``LANE_SKIPS``, in its order."""
    return [path for path in settings.MIDDLEWARE if path not in LANE_SKIPS]


class PalateWSGIHandler(WSGIHandler):
    """Django's WSGI handler, with the hot rating requests in the short lane."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from config import hot_urls

        self._lane = _Lane(lane_middleware())
        self._lane_views = hot_urls.LANE_VIEWS
        self._lane_resolver = URLResolver(RegexPattern(r"^/"), hot_urls.hot_patterns)

    def in_lane(self, request) -> bool:
        meta = request.META
        if (
            request.method != "POST"
            or "HTTP_COOKIE" in meta
            or not meta.get("HTTP_AUTHORIZATION", "").startswith("Token ")
        ):
            return False
        try:
            match = self._lane_resolver.resolve(request.path_info)
        except Resolver404:
            return False
        request.lane_match = match
        return match.func in self._lane_views

    def get_response(self, request):
        if not self.in_lane(request):
            return super().get_response(request)
        # As BaseHandler.get_response, through the lane's chain.
        set_urlconf(settings.ROOT_URLCONF)
        request.urlconf = LANE_URLCONF
        response = self._lane._middleware_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response(
                "%s: %s",
                response.reason_phrase,
                request.path,
                response=response,
                request=request,
            )
        return response


def get_wsgi_application() -> PalateWSGIHandler:
    """``django.core.wsgi.get_wsgi_application`` with ``PalateWSGIHandler``."""
    import django

    django.setup(set_prefix=False)
    return PalateWSGIHandler()
