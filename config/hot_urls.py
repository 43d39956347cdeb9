"""URLs of the hot lane (``core.hot_lane``): the two per-rating API requests
first, at their full paths (one pattern matched instead of four levels), then
the whole site, so ``reverse()`` and the error handlers answer as in
``config.urls``. The two patterns are taken from ``annotation.api.urls`` by
name (route, view and name as there); ``tests/test_hot_lane.py`` checks them
against ``config.urls``."""

from django.conf import settings
from django.urls import include, path

from config.urls import handler404  # noqa: F401  (the API's JSON 404)

LANE_NAMES = ("api-assignment-next", "api-rating")
_api = include("annotation.api.urls")[0]
hot_patterns = [
    path(f"api/v1/{p.pattern}", p.callback, name=p.name)
    for p in _api.urlpatterns
    if getattr(p, "name", None) in LANE_NAMES
]
LANE_VIEWS = tuple(p.callback for p in hot_patterns)

urlpatterns = [*hot_patterns, path("", include(settings.ROOT_URLCONF))]
