"""Formatting filters shared by every app's templates."""

import json

from django import template

register = template.Library()


@register.filter
def pretty_json(value) -> str:
    """A JSON value as indented JSON (what a lab reads and can copy), never a
    Python repr. Autoescaped like any string."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
