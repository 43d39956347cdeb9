"""Checks that keep values the database would refuse (or that make no sense) away
from it, shared by model fields, serializers and services.

PostgreSQL refuses a NUL character in text and in JSON strings (``\\u0000``), and
JSON that holds NaN or Infinity; an integer past its column's range is an error
too. Each of those would otherwise surface as a 500. The validators raise
Django's ``ValidationError``, which model forms, DRF serializers and
``full_clean`` all turn into field errors.
"""

import math

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

# Widest integers PostgreSQL columns hold (bigint); DRF fields take these bounds.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
INT_MAX = 2**31 - 1
MAX_JSON_DEPTH = 20


def json_problem(value, *, depth: int = 0) -> str | None:
    """Why ``value`` cannot be stored as JSON, or None when it can."""
    if depth > MAX_JSON_DEPTH:
        return f"is nested more than {MAX_JSON_DEPTH} levels deep"
    if isinstance(value, str):
        return "contains a NUL character" if "\x00" in value else None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "contains NaN or Infinity"
    if isinstance(value, dict):
        if any(not isinstance(k, str) or "\x00" in k for k in value):
            return "has a key that is not a plain string"
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return f"holds a {type(value).__name__}, which is not JSON"
    for item in items:
        problem = json_problem(item, depth=depth + 1)
        if problem:
            return problem
    return None


def validate_json_storable(value) -> None:
    problem = json_problem(value)
    if problem:
        raise ValidationError(f"This value {problem}.", code="invalid")


def validate_json_object(value) -> None:
    """A JSON object (``{...}``) that PostgreSQL will store."""
    if not isinstance(value, dict):
        raise ValidationError("Must be a JSON object ({...}).", code="invalid")
    validate_json_storable(value)


@deconstructible
class StringListValidator:
    """A list of strings: at most ``max_items``, each at most ``max_length`` long,
    no NUL; ``choices`` restricts them to known names (no repeats then)."""

    def __init__(self, *, max_items: int, max_length: int, choices=None):
        self.max_items = max_items
        self.max_length = max_length
        self.choices = tuple(choices) if choices is not None else None

    def __call__(self, value) -> None:
        if not isinstance(value, list):
            raise ValidationError("Must be a list of strings.", code="invalid")
        if len(value) > self.max_items:
            raise ValidationError(f"At most {self.max_items} items.", code="max_length")
        for item in value:
            if not isinstance(item, str):
                raise ValidationError("Must be a list of strings.", code="invalid")
            if "\x00" in item or len(item) > self.max_length:
                raise ValidationError(
                    f"Each item is a string of at most {self.max_length} characters "
                    "without NUL characters.",
                    code="invalid",
                )
        if self.choices is not None:
            unknown = [v for v in value if v not in self.choices]
            if unknown:
                raise ValidationError(
                    f"Unknown: {', '.join(unknown)}. Known: {', '.join(self.choices)}.",
                    code="invalid_choice",
                )
            if len(set(value)) != len(value):
                raise ValidationError("Names must not repeat.", code="invalid")

    def __eq__(self, other) -> bool:
        return isinstance(other, StringListValidator) and (
            self.max_items,
            self.max_length,
            self.choices,
        ) == (other.max_items, other.max_length, other.choices)
