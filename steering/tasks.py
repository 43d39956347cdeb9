"""Celery task: run one optimisation (takes its id; idempotent)."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(
    name="steering.optimize",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # Rendering happens inline in this task: hosted backends can take a minute
    # per image, so a large run is long. The soft limit fails the run cleanly.
    soft_time_limit=2 * 3600,
    time_limit=2 * 3600 + 120,
)
def optimize(optimization_id: int) -> str:
    return services.optimization_run(optimization_id=optimization_id)
