"""Maps service errors to JSON responses: ``{"detail": message, "code": code}``."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.exceptions import PalateError


def exception_handler(exc, context):
    if isinstance(exc, PalateError):
        return Response(
            {"detail": exc.message, "code": exc.code}, status=exc.http_status
        )
    return drf_exception_handler(exc, context)
