"""Maps errors to JSON responses: ``{"detail": message, "code": code}``.

Service errors carry both; DRF's own (not authenticated, permission denied, not
found, method not allowed...) get their ``code`` added so every error body has
the same two keys. Validation errors keep their per-field messages inside the
envelope, under ``errors``::

    {"detail": "Invalid input: lease_seconds: Ensure this value is less than or
     equal to 86400.", "code": "invalid", "errors": {"lease_seconds": ["..."]}}
"""

from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.exceptions import PalateError


def _flatten(errors, prefix: str = "") -> list[str]:
    """``field: message`` lines from DRF's nested error structure."""
    if isinstance(errors, dict):
        out = []
        for key, value in errors.items():
            name = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else name)
        return out
    if isinstance(errors, list):
        out = []
        for i, value in enumerate(errors):
            if isinstance(value, dict | list):
                out += _flatten(value, f"{prefix}[{i}]")
            else:
                out += _flatten(value, prefix)
        return out
    return [f"{prefix}: {errors}" if prefix else str(errors)]


def _validation_envelope(data) -> dict:
    errors = data if isinstance(data, dict) else {"non_field_errors": data}
    lines = _flatten(errors)
    detail = "Invalid input: " + "; ".join(lines[:5])
    if len(lines) > 5:
        detail += f" (and {len(lines) - 5} more)"
    return {"detail": detail, "code": "invalid", "errors": errors}


def exception_handler(exc, context):
    if isinstance(exc, PalateError):
        return Response(
            {"detail": exc.message, "code": exc.code}, status=exc.http_status
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        response.data = _validation_envelope(response.data)
    elif isinstance(response.data, dict) and set(response.data) == {"detail"}:
        detail = response.data["detail"]
        response.data["code"] = getattr(detail, "code", None) or getattr(
            exc, "default_code", "error"
        )
    return response
