"""Celery tasks: one task per backend, one delivery per (job, seed).

Each backend has its own task (``generation.generate_<backend>``) so that its rate
limit, time limits and queue are its own: ``generation.generate_diffusers`` is
routed to the ``gpu`` queue (``CELERY_TASK_ROUTES``), so GPU workers on other
machines run ``celery -A config worker -Q gpu``. The work itself is
``services.item_run``; a task only turns ``RetryLater`` into a Celery retry.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.app.task import Task

from . import conf
from .backends import BACKENDS
from .services import RetryLater, item_run


def _options(backend: str) -> dict[str, Any]:
    limits = conf.limits_for(backend)
    return {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "ignore_result": True,
        "rate_limit": limits.rate_limit,
        "soft_time_limit": limits.soft_time_limit,
        "time_limit": limits.time_limit,
        # Attempts are counted on the item (transient errors only); a wait for a
        # concurrency slot or another delivery's claim is not an attempt.
        "max_retries": None,
    }


def _run(task: Task, item_id: int) -> str:
    try:
        return item_run(item_id=item_id)
    except RetryLater as exc:
        raise task.retry(countdown=exc.countdown, exc=exc) from None


@shared_task(name="generation.generate_procedural", **_options("procedural"))
def generate_procedural(self, item_id: int) -> str:
    """Generate one image with the offline procedural backend."""
    return _run(self, item_id)


@shared_task(name="generation.generate_diffusers", **_options("diffusers"))
def generate_diffusers(self, item_id: int) -> str:
    """Generate one image (or a batch of its job) with a local diffusers pipeline."""
    return _run(self, item_id)


@shared_task(name="generation.generate_flux", **_options("flux"))
def generate_flux(self, item_id: int) -> str:
    """Generate one image through the Black Forest Labs FLUX API."""
    return _run(self, item_id)


@shared_task(name="generation.generate_gemini", **_options("gemini"))
def generate_gemini(self, item_id: int) -> str:
    """Generate one image through the Gemini API."""
    return _run(self, item_id)


@shared_task(
    name="generation.redeliver_abandoned",
    ignore_result=True,
    soft_time_limit=25,
    time_limit=30,
)
def redeliver_abandoned() -> int:
    """Items whose worker died (beat, every ``PALATE_JOB_SWEEP_S``)."""
    from .services.jobs import items_redeliver_abandoned

    return items_redeliver_abandoned()


TASKS: dict[str, Task] = {
    "procedural": generate_procedural,
    "diffusers": generate_diffusers,
    "flux": generate_flux,
    "gemini": generate_gemini,
}
assert set(TASKS) == set(BACKENDS), "every backend needs its task declared here"


def task_for_backend(backend: str) -> Task:
    return TASKS[backend]
