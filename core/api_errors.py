"""Maps errors to JSON responses: ``{"detail": message, "code": code}``.

Service errors carry both; DRF's own (not authenticated, permission denied, not
found, method not allowed...) get their ``code`` added so every error body has
the same two keys."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.exceptions import PalateError


def exception_handler(exc, context):
    if isinstance(exc, PalateError):
        return Response(
            {"detail": exc.message, "code": exc.code}, status=exc.http_status
        )
    response = drf_exception_handler(exc, context)
    if (
        response is not None
        and isinstance(response.data, dict)
        and set(response.data) == {"detail"}
    ):
        detail = response.data["detail"]
        response.data["code"] = getattr(detail, "code", None) or getattr(
            exc, "default_code", "error"
        )
    return response
