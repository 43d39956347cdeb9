"""Pagination with bounded numbers, refused when they are not numbers.

DRF's ``LimitOffsetPagination`` passes any ``limit``/``offset`` to SQL (one past
bigint is a database error, a 500) and quietly ignores garbage (``limit=abc``
answers the default page). Here both are checked: a whole number in range, or a
400 that says which; the schema (``PAGE_PARAMETERS``) states the same ranges.
"""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination

from core.exceptions import InvalidInput

MAX_OFFSET = 2**31 - 1
MAX_LIMIT = 1000

PAGE_PARAMETERS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        description=f"Page size (1 to {MAX_LIMIT}).",
    ),
    OpenApiParameter(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        description="Rows to skip.",
    ),
]


def query_int(request, name: str, *, lo: int, hi: int, default: int | None):
    """The query parameter ``name`` as a whole number in [lo, hi]; absent is
    ``default``; anything else is InvalidInput (400)."""
    raw = request.query_params.get(name)
    if raw is None or (raw == "" and default is not None):
        return default
    if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:
        raise InvalidInput(f"{name}: a whole number from {lo} to {hi}.")
    return int(raw)


def query_bool(request, name: str, *, default: bool = False) -> bool:
    """``true``/``false`` (or ``1``/``0``); anything else is InvalidInput (400)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidInput(f"{name}: true or false.")


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_limit(self, request) -> int:
        return query_int(
            request, "limit", lo=1, hi=MAX_LIMIT, default=self.default_limit
        )

    def get_offset(self, request) -> int:
        return query_int(request, "offset", lo=0, hi=MAX_OFFSET, default=0)


def paginated(serializer_class) -> type[serializers.Serializer]:
    """The page ``LimitOffsetPagination`` answers, for the schema: count, next,
    previous and the rows."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return type(
        f"Paginated{name}ListSerializer",
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )
