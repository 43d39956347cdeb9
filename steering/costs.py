"""What a run will cost before it runs: images × price, and the time it takes.

Prices are per image, in ``STEERING_COST_UNIT`` (USD by default), from the Django
setting ``STEERING_COST_PER_IMAGE`` (a dict by backend) over these defaults: list
prices of the hosted APIs at the time of writing (FLUX1.1 [pro] $0.04, Gemini 2.5
Flash Image $0.039) and 0 for the local backends, whose cost is machine time.
Time per image is the median of the backend's last 50 finished images, when there
are any. Images the run can reuse (same prompt and seed already generated) cost
nothing, so the estimate is an upper bound.
"""

from __future__ import annotations

import statistics

from django.conf import settings

DEFAULT_COST_PER_IMAGE = {
    "procedural": 0.0,
    "diffusers": 0.0,
    "flux": 0.04,
    "gemini": 0.039,
}


def cost_unit() -> str:
    return str(getattr(settings, "STEERING_COST_UNIT", "USD"))


def cost_per_image(backend: str) -> float:
    table = dict(DEFAULT_COST_PER_IMAGE)
    table.update(getattr(settings, "STEERING_COST_PER_IMAGE", {}))
    return float(table.get(backend, 0.0))


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
