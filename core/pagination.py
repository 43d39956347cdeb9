"""Pagination with bounded numbers: DRF's ``LimitOffsetPagination`` passes any
``limit``/``offset`` to SQL, where one past bigint is a database error (a 500)."""

from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 2**31 - 1


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = 1000

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), MAX_OFFSET)
