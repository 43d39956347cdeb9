"""Shared helpers for the hosted backends: turning HTTP outcomes into our errors."""

from __future__ import annotations

import email.utils
import io
import time

from .base import PermanentError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def short(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_image(data: bytes, *, what: str) -> None:
    """Refuse a provider payload that is not a decodable image (permanent)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception:
        raise PermanentError(f"{what} is not an image.") from None
