"""Pagination with bounded numbers: DRF's ``LimitOffsetPagination`` passes any
``limit``/``offset`` to SQL, where one past bigint is a database error (a 500)."""

from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 2**31 - 1


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = 1000

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), MAX_OFFSET)


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
