import mimetypes

from django.conf import settings
from django.contrib import admin
from django.http import Http404, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults
from django.views.decorators.http import require_GET
from django.views.static import serve
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView

from annotation.engine.services.items import item_picture
from core.exceptions import NotFound
from core.schema import SchemaView


@require_GET
def media(request, path):
    """Media from Django storage, for the embedded default (a real deployment puts
    a web server or object storage in front). Reads MEDIA_ROOT per request, and
    marks files immutable: image names are their sha256, so a name never changes
    content."""
    response = serve(request, path, document_root=settings.MEDIA_ROOT)
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


def not_found(request, exception):
    """The API answers JSON for every 404, like its other errors (``{detail,
    code}``), also for a URL no route matches (``/api/v1/assignments/-1/``);
    other pages keep Django's own."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


handler404 = not_found


@require_GET
def media_item(request, media_token):
    """The picture of an item an annotator is shown, named by the item's opaque
    media token (``annotation.engine.item_tokens``), never by the file's path or
    sha256: a check, a repeat and a counted image are fetched alike, a repeat
    under a new name. The same headers for every kind: no Last-Modified (a
    file's age would tell an old image from a new one), private caching."""
    try:
        picture = item_picture(media_token=media_token)
    except NotFound:
        raise Http404("No such item.") from None
    content_type = mimetypes.guess_type(picture.name)[0] or "application/octet-stream"
    # Bytes, not FileResponse: that would name the stored file in a
    # Content-Disposition header.
    with picture.open("rb") as f:
        data = f.read()
    response = HttpResponse(data, content_type=content_type)
    response["Content-Length"] = str(len(data))
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


api_v1 = [
    path("", include("annotation.api.urls")),
    path("", include("rewardmodel.api.urls")),
    path("", include("generation.api.urls")),
    path("schema/", SchemaView.as_view(), name="schema"),
    # The split view serves Swagger UI's start script as a file (no inline script,
    # which the Content-Security-Policy refuses).
    path(
        "docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"
    ),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("generation/", include("generation.urls")),
    path("steering/", include("steering.urls")),
    path("staff/", include("dashboard.urls")),
    path("media/i/<str:media_token>", media_item, name="media_item"),
    path("media/<path:path>", media, name="media"),
    path("", include("annotation.urls")),
]
