from celery import shared_task

from . import services


@shared_task(
    name="annotation.sweep_expired_leases",
    ignore_result=True,
    soft_time_limit=50,
    time_limit=60,
)
def sweep_expired_leases() -> int:
    """Return the slots of overdue leases (claims also do this for their study)."""
    total = 0
    while (n := services.lease_expire(limit=1000)) > 0:
        total += n
    return total


@shared_task(
    bind=True,
    name="annotation.export_dataset",
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
    # Waits for a dead worker's heartbeat to age (core.jobs); a live worker keeps
    # it fresh, and then this copy gives up after a few looks.
    max_retries=4,
)
def export_dataset(self, export_id: int) -> str:
    """Write a queued dataset export (progress on the Export row). Idempotent; a
    redelivered copy takes over an export whose worker died."""
    from annotation.datasets.services.export_jobs import export_execute
    from core.jobs import StillRunning

    try:
        return export_execute(export_id=export_id).status
    except StillRunning as exc:
        if self.request.retries >= self.max_retries:
            return "running elsewhere"
        raise self.retry(countdown=exc.countdown) from None


@shared_task(
    name="annotation.sweep_stale_exports",
    ignore_result=True,
    soft_time_limit=25,
    time_limit=30,
)
def sweep_stale_exports() -> int:
    """Fail exports whose worker died (beat, every ``PALATE_JOB_SWEEP_S``)."""
    from annotation.datasets.services.export_jobs import exports_fail_stale

    return exports_fail_stale()


@shared_task(
    name="annotation.check_integrity",
    ignore_result=True,
    soft_time_limit=240,
    time_limit=300,
)
def check_integrity() -> str:
    """The invariant check on a schedule: drift is logged as an error and left as
    an alert that the admin shows to staff (repair stays a human decision:
    ``manage.py check_integrity --repair``)."""
    drift = services.integrity_check()
    services.integrity_alert(drift=drift, source="periodic check")
    return drift.summary()
