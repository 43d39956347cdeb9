"""Estimated price per generated image, by backend: the one table that the
generation page and prompt steering both read.

The figures are estimates, not bills: list prices of the hosted APIs at the time
of writing (FLUX1.1 [pro] $0.04, Gemini 2.5 Flash Image $0.039 per image) and 0
for the local backends, whose cost is machine time. A deployment overrides any of
them with the Django setting ``GENERATION_COST_PER_IMAGE`` (a dict by backend) and
the currency with ``GENERATION_COST_UNIT`` (USD by default). A backend with a
price above 0 is *paid*: the staff page asks before queueing jobs on it.
"""

from __future__ import annotations

from django.conf import settings

DEFAULT_COST_PER_IMAGE = {
    "procedural": 0.0,
    "diffusers": 0.0,
    "flux": 0.04,
    "gemini": 0.039,
}


def cost_unit() -> str:
    return str(getattr(settings, "GENERATION_COST_UNIT", "USD"))


def cost_per_image(backend: str) -> float:
    table = dict(DEFAULT_COST_PER_IMAGE)
    table.update(getattr(settings, "GENERATION_COST_PER_IMAGE", {}))
    return float(table.get(backend, 0.0))


def prices() -> dict[str, float]:
    """Every registered backend's estimated price per image."""
    from .backends import BACKENDS

    return {b: cost_per_image(b) for b in BACKENDS}


def jobs_estimate(*, backend: str, n_prompts: int, n_seeds: int) -> dict:
    """What queueing ``n_prompts`` jobs of ``n_seeds`` images each will make and
    cost (an upper bound: a failed image is not billed)."""
    per_image = cost_per_image(backend)
    images = n_prompts * n_seeds
    return {
        "backend": backend,
        "prompts": n_prompts,
        "seeds": n_seeds,
        "images": images,
        "per_image": per_image,
        "cost": round(per_image * images, 4),
        "unit": cost_unit(),
        "paid": per_image > 0,
    }
