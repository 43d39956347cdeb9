"""Security headers on every response.

Content-Security-Policy: every script, style, image, font and connection comes
from this site itself (the pages vendor htmx; the API docs use the
drf-spectacular-sidecar copies of Swagger UI and Redoc). Scripts are never
inline. Inline *styles* are allowed: Swagger UI and Redoc set them from
JavaScript and the admin uses style attributes; they load nothing remote.
Images: self-hosted and ``data:`` (icons inside the sidecar CSS). Redoc's search
runs in a ``blob:`` worker.

Permissions-Policy: no page here needs the camera, microphone, location, payment
or other powerful features, so none may use them (embedded content included).
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "usb",
        "browsing-topics",
    )
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
