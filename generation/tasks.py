"""Celery tasks: one task type per backend, one task per (job, seed).

Each backend gets its own task name (``generation.generate_<backend>``) so that
its rate limit, time limits and queue are its own: ``generation.generate_diffusers``
is routed to the ``gpu`` queue (``CELERY_TASK_ROUTES``), so GPU workers on other
machines run ``celery -A config worker -Q gpu``. The work itself is
``services.item_run``; the task only turns ``RetryLater`` into a Celery retry.
"""

from __future__ import annotations

from celery import shared_task
from celery.app.task import Task

from . import conf, services
from .backends import BACKENDS

_TASKS: dict[str, Task] = {}


def _make_task(backend: str) -> Task:
    limits = conf.limits_for(backend)

    @shared_task(
        name=f"generation.generate_{backend}",
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        rate_limit=limits.rate_limit,
        soft_time_limit=limits.soft_time_limit,
        time_limit=limits.time_limit,
        # Attempts are counted on the item (transient errors only); a wait for a
        # concurrency slot or another delivery's claim is not an attempt.
        max_retries=None,
    )
    def generate(self, item_id: int) -> str:
        try:
            return services.item_run(item_id=item_id)
        except services.RetryLater as exc:
            raise self.retry(countdown=exc.countdown, exc=exc) from None

    generate.__doc__ = f"Generate one image with the '{backend}' backend."
    return generate


def task_for_backend(backend: str) -> Task:
    return _TASKS[backend]


for _name in BACKENDS:
    _TASKS[_name] = _make_task(_name)
