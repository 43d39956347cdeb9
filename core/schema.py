"""The OpenAPI schema view, generated once per process under a lock.

drf-spectacular builds the schema on each request, and its extension registry
loads its classes lazily without a lock: concurrent first requests on a fresh
worker saw a half-loaded extension (``target_class`` None) and answered 500. The
schema does not depend on the request (``SERVE_PUBLIC``: no per-user filtering),
so it is built once, by one thread, and served from memory afterwards.
"""

import threading

from drf_spectacular.views import SpectacularAPIView
from rest_framework.response import Response

_lock = threading.Lock()
_schemas: dict = {}


class SchemaView(SpectacularAPIView):
    def _get_schema_response(self, request):
        version = (
            self.api_version or request.version or self._get_version_parameter(request)
        )
        key = (self.urlconf, version, self.serve_public)
        with _lock:
            schema = _schemas.get(key)
            if schema is None:
                generator = self.generator_class(
                    urlconf=self.urlconf, api_version=version, patterns=self.patterns
                )
                schema = generator.get_schema(request=request, public=self.serve_public)
                _schemas[key] = schema
        filename = self._get_filename(request, version)
        return Response(
            data=schema,
            headers={"Content-Disposition": f'inline; filename="{filename}"'},
        )


# --- error answers every operation can give ---------------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "required": ["detail"],
}
_ERRORS = {
    "400": "Refused: bad parameters or body ({detail, code}); nothing changed.",
    "403": "Not signed in, or not allowed ({detail, code}).",
    "404": "No such object ({detail, code}).",
    "415": "Unsupported body content type ({detail, code}).",
}


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
        },
    }


def _codes(path: str, operation: dict) -> list[str]:
    codes = []
    if operation.get("parameters") or operation.get("requestBody"):
        codes.append("400")
    if any(s for s in operation.get("security", [{}])):
        codes.append("403")
    if "{" in path:
        codes.append("404")
    if operation.get("requestBody"):
        codes.append("415")
    return codes


# Request bodies whose server refuses an unknown key (400): the schema says so
# (``additionalProperties: false``), so a client reading it knows.
CLOSED_REQUEST_BODIES = {
    ("/api/v1/studies/{study_id}/quality/config/", "patch"),
    ("/api/v1/studies/{study_id}/exports/", "post"),
}


def _close_request_body(result: dict, operation: dict) -> None:
    components = result["components"]["schemas"]
    for media in operation.get("requestBody", {}).get("content", {}).values():
        ref = media.get("schema", {}).get("$ref", "")
        component = components.get(ref.rsplit("/", 1)[-1]) if ref else None
        if component is not None:
            media["schema"] = {**component, "additionalProperties": False}


def document_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation documents the errors
    the server answers for any operation of its kind (bad input, not allowed, no
    such object, wrong content type), with the one error body the API uses
    (``core.api_errors``), unless the view documents them itself; closed
    request bodies forbid unknown keys."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = (
        ERROR_SCHEMA
    )
    for path, methods in result.get("paths", {}).items():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if (path, method) in CLOSED_REQUEST_BODIES:
                _close_request_body(result, operation)
            responses = operation["responses"]
            for code in _codes(path, operation):
                responses.setdefault(code, _error(_ERRORS[code]))
            for code, response in responses.items():
                if code.startswith("4") and "content" not in response:
                    response["content"] = _error("")["content"]
    return result
