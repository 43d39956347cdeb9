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


def schema_cache_clear() -> None:
    """For tests that change what the schema shows."""
    with _lock:
        _schemas.clear()
