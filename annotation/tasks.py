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
