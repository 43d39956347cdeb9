"""Celery task: run one optimisation (takes its id; idempotent)."""

from __future__ import annotations

from celery import shared_task

from core.jobs import StillRunning

from . import services


@shared_task(
    bind=True,
    name="steering.optimize",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # Rendering happens inline in this task: hosted backends can take a minute
    # per image, so a large run is long. The soft limit fails the run cleanly.
    soft_time_limit=2 * 3600,
    time_limit=2 * 3600 + 120,
    max_retries=4,
)
def optimize(self, optimization_id: int) -> str:
    """A redelivered copy (the pool process died) waits for the run's heartbeat
    to stop, then fails it with the reason (core.jobs)."""
    try:
        return services.optimization_run(optimization_id=optimization_id)
    except StillRunning as exc:
        if self.request.retries >= self.max_retries:
            return "running elsewhere"
        raise self.retry(countdown=exc.countdown) from None


@shared_task(
    name="steering.sweep_stale_optimizations",
    ignore_result=True,
    soft_time_limit=25,
    time_limit=30,
)
def sweep_stale_optimizations() -> int:
    """Fail runs whose worker died (beat, every ``PALATE_JOB_SWEEP_S``)."""
    return services.optimizations_fail_stale()
