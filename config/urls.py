from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.static import serve
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

api_v1 = [
    path("", include("annotation.api.urls")),
    path("", include("rewardmodel.api.urls")),
    path("", include("generation.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("generation/", include("generation.urls")),
    # Media from Django storage. Behind a real web server or object storage in a
    # large deployment; served here so the embedded default needs nothing else.
    path("media/<path:path>", serve, {"document_root": settings.MEDIA_ROOT}),
    path("", include("annotation.urls")),
]
