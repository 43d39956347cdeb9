"""What a run will cost before it runs: images × price, and the time it takes.

Prices per image come from ``generation.costs`` (the one table of estimated
prices, overridable with the ``GENERATION_COST_PER_IMAGE`` setting). Time per
image is the median of the backend's last 50 finished images, when there are
any. Images the run can reuse (same prompt and seed already generated) cost
nothing, so the estimate is an upper bound.
"""

from __future__ import annotations

import statistics

from generation.costs import cost_per_image, cost_unit

__all__ = ["cost_per_image", "cost_unit", "estimate", "estimates"]


def seconds_per_image(backend: str) -> float | None:
    from generation.models import GenerationItem, ItemStatus

    recent = list(
        GenerationItem.objects.filter(
            job__backend=backend, status=ItemStatus.DONE, duration_ms__isnull=False
        )
        .order_by("-pk")
        .values_list("duration_ms", flat=True)[:50]
    )
    return statistics.median(recent) / 1000 if recent else None


def estimate(*, backend: str, max_images: int) -> dict:
    per_image = cost_per_image(backend)
    secs = seconds_per_image(backend)
    return {
        "backend": backend,
        "images": max_images,
        "per_image": per_image,
        "cost": round(per_image * max_images, 4),
        "unit": cost_unit(),
        "seconds_per_image": secs,
        "seconds": None if secs is None else round(secs * max_images, 1),
    }


def estimates(*, max_images: int) -> list[dict]:
    from generation.backends import BACKENDS

    return [estimate(backend=b, max_images=max_images) for b in BACKENDS]
