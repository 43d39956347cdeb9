"""Long jobs that survive a dying worker: heartbeats, takeover and the sweep.

Every long job (export, training run, steering run) is a row with a status and a
``heartbeat_at``. While a worker runs it, a ``Heartbeat`` thread in that worker
process stamps the row every ``heartbeat_every()``; the thread dies with the
process, so a row whose stamp stops moving belongs to a dead worker:

- a redelivered task (the pool process was killed: Celery requeues the message at
  once, ``task_reject_on_worker_lost``) finds the row "running"; once the stamp is
  older than ``takeover_after()`` it takes the row over with a compare-and-set on
  ``heartbeat_at`` (one winner, so never two runs at once), cleans the partial
  files and starts again; before that it retries after the remaining wait;
- when the whole worker is gone nothing is redelivered until the broker's
  visibility timeout, so the beat sweep (every ``PALATE_JOB_SWEEP_S``) fails rows
  whose stamp is older than ``stale_after()`` with a reason and cleans their
  partial files.

Worst case from the worker's death to a failed row: stale + sweep period = 90 s
+ 30 s = 2 minutes with the default settings (config/settings/base.py; tests
shorten them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

logger = logging.getLogger(__name__)


def _seconds(name: str) -> timedelta:
    return timedelta(seconds=float(getattr(settings, name)))


def heartbeat_every() -> timedelta:
    """How often a running job stamps its row (``PALATE_JOB_HEARTBEAT_S``, 10)."""
    return _seconds("PALATE_JOB_HEARTBEAT_S")


def takeover_after() -> timedelta:
    """A redelivered task takes over a row whose stamp is this old
    (``PALATE_JOB_TAKEOVER_S``, 40)."""
    return _seconds("PALATE_JOB_TAKEOVER_S")


def stale_after() -> timedelta:
    """The sweep fails a row whose stamp is this old (``PALATE_JOB_STALE_S``, 90)."""
    return _seconds("PALATE_JOB_STALE_S")


def dead_worker_reason() -> str:
    """The reason a sweep records on a job whose worker vanished."""
    return (
        "The worker running this job stopped (killed or crashed): no heartbeat for "
        f"{int(stale_after().total_seconds())} s. Partial files were removed; start "
        "it again."
    )


def stale_rows_fail(
    *,
    model,
    running: str,
    cleanup: Callable[[int], None],
    failed: dict,
    now,
    keep: int | None = None,
) -> list[int]:
    """Fail every row of ``model`` in status ``running`` whose worker is gone (no
    heartbeat for ``stale_after()``): for each, under its lock and checked again,
    ``cleanup(pk)`` removes its partial files first, then ``failed`` (the field
    values of a failed row) is written, so a takeover waiting on the lock finds
    the row failed and nobody sees a failed row with files left. Returns the ids.

    ``keep``: the row the caller is about to take over (a redelivered task for
    it is alive, so it is resumed, not failed, however old its stamp)."""
    stale = Q(heartbeat_at__lt=now - stale_after()) | Q(heartbeat_at__isnull=True)
    done = []
    candidates = (
        model.objects.filter(stale, status=running)
        .exclude(pk=keep)
        .values_list("pk", flat=True)
    )
    for pk in list(candidates):
        # nested: every path that starts a training run sweeps first, the
        # admin's add form inside Django's transaction
        with transaction.atomic(durable=False):
            locked = model.objects.select_for_update(no_key=True).filter(
                stale, pk=pk, status=running
            )
            if locked.values_list("pk", flat=True).first() is None:
                continue
            cleanup(pk)
            model.objects.filter(pk=pk).update(**failed)
        done.append(pk)
    return done


class StillRunning(Exception):  # noqa: N818 - a state, not a failure
    """The job is running under a live heartbeat; look again after ``countdown``
    seconds (a redelivered task retries, and takes over if the stamp stopped)."""

    def __init__(self, countdown: float):
        super().__init__(f"running elsewhere; look again in {countdown:.0f} s")
        self.countdown = countdown


def takeover_wait(heartbeat_at, *, now=None) -> float:
    """Seconds until a row stamped at ``heartbeat_at`` may be taken over (0: now)."""
    if heartbeat_at is None:
        return 0.0
    now = now or timezone.now()
    return max(0.0, (heartbeat_at + takeover_after() - now).total_seconds())


class Heartbeat:
    """A daemon thread that calls ``beat()`` every ``heartbeat_every()`` while the
    ``with`` block runs. It has its own database connection (Django's are per
    thread) and closes it when it stops. A failed stamp is logged and tried again
    at the next tick: a short database hiccup must not end the job, and a long one
    makes the row stale, which is the truth then."""

    def __init__(self, beat: Callable[[], object]):
        self.beat = beat
        self.every = heartbeat_every().total_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.every):
                close_old_connections()
                try:
                    self.beat()
                except Exception:
                    logger.exception("heartbeat failed; trying again")
        finally:
            connection.close()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
