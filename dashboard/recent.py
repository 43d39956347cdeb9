"""Study-wide figures that need a pass over a study's ratings or assignments
(Krippendorff's alpha, assignments by how they were dealt), kept for a while
instead of recomputed on every render (issue 29: 1.4-5 s a render at 1.35 M
ratings).

A kept value is reused while it is younger than ``MAX_AGE``, and after that for
as long as the study's ratings have not changed (``study_fingerprint``: its
images' rating and lease counters and its newest rating, two indexed reads);
otherwise it is computed again during the render. The page says "as of HH:MM:SS
UTC" whenever it shows a value the database may have moved past (``stale``).

Kept in Django's cache (per process unless a shared cache is configured), under
a key naming the study and its creation time, so a reused primary key never
meets another study's figures."""

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.cache import cache

from annotation.studies.models import Study

MAX_AGE = 60  # seconds a kept figure is shown without asking whether it moved


@dataclass(frozen=True)
class Kept:
    value: object
    as_of: datetime  # when it was computed (UTC)
    stale: bool  # the study changed since, or may have


def kept(*, study: Study, name: str, compute, fingerprint=None) -> Kept:
    """``compute()`` for ``study``, or the value kept from an earlier call (see
    the module). ``fingerprint``, if given, is a callable returning what must be
    unchanged for an older value to count as current."""
    key = f"palate:dash:{name}:{study.pk}:{study.created_at.timestamp()}"
    now = time.time()
    hit = cache.get(key)
    if hit is not None and now - hit["at"] < MAX_AGE:
        stale = fingerprint is None or hit["fp"] != fingerprint()
        return Kept(hit["value"], _utc(hit["at"]), stale)
    fp = fingerprint() if fingerprint is not None else None
    if hit is not None and fp is not None and hit["fp"] == fp:
        return Kept(hit["value"], _utc(hit["at"]), False)
    value = compute()
    cache.set(key, {"at": now, "fp": fp, "value": value}, None)
    return Kept(value, _utc(now), False)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)
