"""Per-backend operating limits, from the backend's defaults, settings and env.

``GENERATION_BACKEND_LIMITS`` in Django settings (a dict keyed by backend name) or
environment variables ``GENERATION_<NAME>_RATE_LIMIT`` / ``_CONCURRENCY`` /
``_MAX_ATTEMPTS`` override the defaults each backend class declares.

* ``rate_limit`` - Celery's per-worker task rate limit, e.g. ``"60/m"``;
* ``concurrency`` - most items of this backend generating at once across all
  workers (PostgreSQL advisory-lock slots; 0 = unbounded);
* ``max_attempts`` - transient failures before an item is marked failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Limits:
    rate_limit: str | None
    concurrency: int
    max_attempts: int
    soft_time_limit: int
    time_limit: int


def limits_for(name: str) -> Limits:
    from .backends import backend_get

    backend = backend_get(name)
    values = {
        "rate_limit": backend.rate_limit,
        "concurrency": backend.concurrency,
        "max_attempts": 6,
        "soft_time_limit": backend.soft_time_limit,
        "time_limit": backend.time_limit,
    }
    values.update(getattr(settings, "GENERATION_BACKEND_LIMITS", {}).get(name, {}))
    for key in values:
        env = os.environ.get(f"GENERATION_{name.upper()}_{key.upper()}")
        if env is not None:
            values[key] = env if key == "rate_limit" else int(env)
    if values["rate_limit"] in ("", "0", "none"):
        values["rate_limit"] = None
    return Limits(**values)


def retry_base_seconds() -> float:
    """First backoff step; doubles with each transient failure (with jitter)."""
    env = os.environ.get("GENERATION_RETRY_BASE_SECONDS")
    if env:
        return float(env)
    return float(getattr(settings, "GENERATION_RETRY_BASE_SECONDS", 2.0))


def retry_max_seconds() -> float:
    env = os.environ.get("GENERATION_RETRY_MAX_SECONDS")
    if env:
        return float(env)
    return float(getattr(settings, "GENERATION_RETRY_MAX_SECONDS", 300.0))
