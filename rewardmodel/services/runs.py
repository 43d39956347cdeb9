"""Training runs: queued → running → succeeded / failed / skipped.

"running" is the lock: a partial unique index allows one such row, so two workers
(or a worker and a command) never train at once. No run blocks training for long
(``core.jobs``): a worker thread stamps ``heartbeat_at`` every 10 s; a redelivered
task takes over a run whose stamp stopped (a killed pool process) and trains it
again; the beat sweep fails a run without a heartbeat for ``stale_after()`` (90 s:
the whole worker died) and deletes its half-written checkpoint. A queued run that
no worker picked up within ``QUEUE_TIMEOUT`` is failed too.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from annotation.studies.models import Study
from core.exceptions import Conflict, InvalidInput, NotFound
from core.jobs import (
    Heartbeat,
    StillRunning,
    dead_worker_reason,
    stale_rows_fail,
    takeover_wait,
)

from ..models import ModelVersion, TrainingRun, VersionEvent

logger = logging.getLogger(__name__)

# A queued run that no worker started in this time never will (no worker, lost
# message, a row added by hand).
QUEUE_TIMEOUT = timedelta(hours=2)

ProgressFn = Callable[[str, float, dict], None]


def training_runs_fail_stale(*, now=None, keep: int | None = None) -> int:
    """Fail runs that can no longer finish (and delete their partial checkpoint
    files); returns how many. The beat task ``rewardmodel.sweep_stale_runs`` calls
    this every 30 s, and so does every path that starts a run (``keep``: the run
    that path is about to take over, see ``core.jobs.stale_rows_fail``)."""
    now = now or timezone.now()
    reason = dead_worker_reason()
    dead = len(
        stale_rows_fail(
            model=TrainingRun,
            running=TrainingRun.Status.RUNNING,
            cleanup=lambda pk: training_run_partial_remove(run_id=pk),
            failed={
                "status": TrainingRun.Status.FAILED,
                "error": reason,
                "finished_at": now,
            },
            now=now,
            keep=keep,
        )
    )
    lost = TrainingRun.objects.filter(
        status=TrainingRun.Status.QUEUED, created_at__lt=now - QUEUE_TIMEOUT
    ).update(
        status=TrainingRun.Status.FAILED,
        error=(
            "No worker started this run within "
            f"{int(QUEUE_TIMEOUT.total_seconds() // 3600)} h (no worker running, "
            "or the run was never handed to one)."
        ),
        finished_at=now,
    )
    if dead or lost:
        logger.warning("failed %s stale and %s never-started training runs", dead, lost)
    return dead + lost


def training_run_partial_remove(*, run_id: int) -> None:
    """Delete checkpoint files of the run that no model version records (a
    half-written one, or one written just before the worker died)."""
    from .. import conf

    kept = set(
        ModelVersion.objects.filter(training_run_id=run_id).values_list(
            "checkpoint_path", flat=True
        )
    )
    folder = conf.checkpoint_dir()
    for path in [*folder.glob(f".run{run_id}-*"), *folder.glob(f"run{run_id}-*")]:
        if str(path) not in kept:
            path.unlink(missing_ok=True)


def _validate(promote: str, trigger: str, config: dict) -> None:
    if promote not in TrainingRun.Promote.values:
        raise InvalidInput(f"promote must be one of {', '.join(TrainingRun.Promote)}.")
    if trigger not in TrainingRun.Trigger.values:
        raise InvalidInput(f"Unknown trigger '{trigger}'.")
    if "seed" in config and (
        isinstance(config["seed"], bool) or not isinstance(config["seed"], int)
    ):
        raise InvalidInput("seed must be an integer.")
    if "similar" in config:  # true / false, or the low-rank prior's list
        from rewardmodel.training import similar_config

        try:
            similar_config(config["similar"])
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    ks = config.get("ks")
    if ks is not None and not (
        isinstance(ks, list) and all(isinstance(k, int) and k >= 0 for k in ks)
    ):
        raise InvalidInput("ks must be a list of whole numbers ≥ 0.")


def training_run_create(
    *,
    study: Study | None = None,
    trigger: str = TrainingRun.Trigger.API,
    promote: str = TrainingRun.Promote.AUTO,
    config: dict | None = None,
    user=None,
) -> TrainingRun:
    """A queued run. Refused (Conflict) while another run is queued or running."""
    config = dict(config or {})
    _validate(promote, trigger, config)
    training_runs_fail_stale()
    # nested: the admin's "Add training run" saves inside Django's changeform
    # transaction (rewardmodel/admin.py, save_model)
    with transaction.atomic(durable=False):
        busy = (
            TrainingRun.objects.select_for_update(no_key=True)
            .filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING])
            .order_by("pk")
            .first()
        )
        if busy is not None:
            raise Conflict(f"Training run #{busy.pk} is already {busy.status}.")
        return TrainingRun.objects.create(
            study=study,
            trigger=trigger,
            promote=promote,
            config=config,
            created_by=user if user is not None and user.is_authenticated else None,
        )


def training_run_enqueue(**kwargs) -> TrainingRun:
    """Create a run and hand it to a worker once the transaction commits."""
    from ..tasks import training_run_task

    run = training_run_create(**kwargs)
    transaction.on_commit(lambda: training_run_task.delay(run.pk))
    return run


def _start(run: TrainingRun):
    """Queued → running, or take over a running run whose worker died (its
    heartbeat older than ``takeover_after()``) by compare-and-set on the stamp.
    Returns the new ``started_at`` (this run's token) or None when another
    delivery won; StillRunning while a live worker has it; Conflict when another
    run holds the training lock."""
    if run.status == TrainingRun.Status.RUNNING:
        wait = takeover_wait(run.heartbeat_at)
        if wait > 0:
            raise StillRunning(wait + 1)
        mine = Q(status=TrainingRun.Status.RUNNING, heartbeat_at=run.heartbeat_at)
    else:
        mine = Q(status=TrainingRun.Status.QUEUED)
    now = timezone.now()
    try:
        with transaction.atomic():
            started = TrainingRun.objects.filter(mine, pk=run.pk).update(
                status=TrainingRun.Status.RUNNING,
                started_at=now,
                heartbeat_at=now,
                stage="starting",
                progress=0.0,
            )
    except IntegrityError:
        raise Conflict("Another training run is in progress.") from None
    return now if started == 1 else None


class RunLog:
    """Collects the run's log lines (stored on the run and the version)."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.lines: list[str] = []

    def __call__(self, msg: str, *, level: int = logging.INFO) -> None:
        logger.log(level, "training #%s: %s", self.run.pk, msg)
        stamp = timezone.now().strftime("%H:%M:%S")
        self.lines.append(f"{stamp} {msg}")
        # Written as it goes, so the dashboard shows the log of a running run
        # (a run logs a few dozen lines, not one per step).
        TrainingRun.objects.filter(pk=self.run.pk).update(log=self.text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def training_run_execute(
    *, run_id: int, on_progress: ProgressFn | None = None
) -> TrainingRun:
    """Run a queued training run to the end. Idempotent: a finished run is
    returned as it is; a run whose worker died is taken over and trained again
    (StillRunning while a live worker has it). Raises Conflict when another run
    holds the lock."""
    try:
        run = TrainingRun.objects.get(pk=run_id)
    except TrainingRun.DoesNotExist:
        raise NotFound(f"No training run {run_id}.") from None
    live = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
    if run.status not in live:
        return run
    # Not this run: its redelivered task is here, alive, and takes it over below
    # even when its stamp is older than the stale age (failing it instead was
    # the flake of test_a_killed_pool_process_run_is_taken_over_and_trained,
    # whenever the redelivery came later than PALATE_JOB_STALE_S).
    training_runs_fail_stale(keep=run_id)
    run.refresh_from_db()
    token = _start(run) if run.status in live else None
    if token is None:
        return TrainingRun.objects.get(pk=run_id)
    training_run_partial_remove(run_id=run_id)
    run.refresh_from_db()
    mine = TrainingRun.objects.filter(
        pk=run_id, status=TrainingRun.Status.RUNNING, started_at=token
    )
    with Heartbeat(lambda: mine.update(heartbeat_at=timezone.now())):
        version = _build(run, mine, on_progress)
    if version is None:
        run.refresh_from_db()
        return run
    _promote_or_keep(run, version)
    from ..dealing import dealing_after_training

    dealing_after_training(study_id=run.study_id)  # adaptive dealing's rankings
    run.refresh_from_db()
    return run


def _build(run: TrainingRun, mine, on_progress: ProgressFn | None):
    """The model version, or None after recording the failure on the run."""
    from .pipeline import model_version_build

    log = RunLog(run)
    try:
        return model_version_build(
            run=run, log=log, started=time.monotonic(), on_progress=on_progress
        )
    except Exception as exc:  # any failure: record it, keep the active version
        log(f"FAILED: {type(exc).__name__}: {exc}", level=logging.ERROR)
        mine.update(
            status=TrainingRun.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            log=log.text + "\n" + traceback.format_exc(),
            finished_at=timezone.now(),
        )
        training_run_partial_remove(run_id=run.pk)
        return None


def _promote_or_keep(run: TrainingRun, version: ModelVersion) -> None:
    from .versions import model_version_promote, version_event_record

    if run.promote != TrainingRun.Promote.NEVER:
        model_version_promote(
            version=version,
            force=run.promote == TrainingRun.Promote.ALWAYS,
            user=run.created_by,
            reason=f"training run #{run.pk} (promote={run.promote})",
        )
    else:
        version_event_record(
            version=version,
            action=VersionEvent.Action.NOT_PROMOTED,
            reason="promote=never: kept as a candidate",
            previous=None,
            user=run.created_by,
        )


def run_progress(
    run: TrainingRun,
    on_progress: ProgressFn | None,
    stage: str,
    fraction: float,
    info: dict | None = None,
) -> None:
    """Stage, progress and heartbeat on the row (and to the caller's callback)."""
    fraction = min(max(fraction, 0.0), 1.0)
    TrainingRun.objects.filter(pk=run.pk).update(
        stage=stage, progress=fraction, heartbeat_at=timezone.now()
    )
    if on_progress is not None:
        on_progress(stage, fraction, info or {})


# --- the nightly run -----------------------------------------------------------


def nightly_schedule_set(*, hour: int, minute: int, enabled: bool = True):
    """Move the nightly retraining to another time (UTC); beat picks it up at its
    next schedule check, no restart needed."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    from . import NIGHTLY_TASK_NAME

    if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
        raise InvalidInput("hour must be a whole number from 0 to 23.")
    if isinstance(minute, bool) or not isinstance(minute, int) or not 0 <= minute <= 59:
        raise InvalidInput("minute must be a whole number from 0 to 59.")
    with transaction.atomic(durable=True):
        task = PeriodicTask.objects.select_for_update(no_key=True).filter(
            name=NIGHTLY_TASK_NAME
        )
        task = task.first()
        if task is None:
            raise NotFound("The nightly retraining schedule is missing (migrate).")
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=str(minute),
            hour=str(hour),
            day_of_week="*",
            day_of_month="*",
            month_of_year="*",
            timezone="UTC",
        )
        task.crontab = crontab
        task.enabled = enabled
        task.save(update_fields=["crontab", "enabled"])
    return task


def embeddings_enqueue(*, image_ids: list[int], backbone: str) -> None:
    """Queue embedding of images (after commit); the task is idempotent."""
    from ..tasks import embed_images

    ids = list(image_ids)
    transaction.on_commit(lambda: embed_images.delay(ids, backbone))
