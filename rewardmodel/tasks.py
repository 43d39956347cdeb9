"""Celery tasks: thin wrappers that take ids and call the services.

Nothing here imports torch at module level; the services import it inside the
worker when a task actually runs.
"""

import logging

from celery import shared_task

from core.exceptions import Conflict

logger = logging.getLogger(__name__)


@shared_task(
    name="rewardmodel.embed_images",
    soft_time_limit=3 * 3600,
    time_limit=3 * 3600 + 300,
)
def embed_images(
    image_ids: list[int] | None = None, backbone: str | None = None
) -> int:
    """Embed images that have no embedding for the backbone yet (idempotent)."""
    from . import conf
    from .embeddings import embeddings_compute

    result = embeddings_compute(
        backbone=backbone or conf.backbone_key(), image_ids=image_ids
    )
    return result["computed"]


@shared_task(
    bind=True,
    name="rewardmodel.train",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 600,
    max_retries=12,
)
def training_run_task(self, run_id: int) -> str:
    """Execute a queued training run. Waits (retries) while another run holds the
    training lock, and while the run's previous worker may still be alive (a
    redelivered copy takes the run over once its heartbeat stopped, core.jobs)."""
    from core.jobs import StillRunning

    from .models import TrainingRun
    from .services import training_run_execute

    try:
        run = training_run_execute(run_id=run_id)
    except StillRunning as exc:
        if self.request.retries >= self.max_retries:
            return "running elsewhere"
        raise self.retry(countdown=exc.countdown) from None
    except Conflict as exc:
        if self.request.retries >= self.max_retries:
            TrainingRun.objects.filter(pk=run_id, status="queued").update(
                status="failed", error=f"Gave up waiting for the training lock: {exc}"
            )
            return "failed"
        raise self.retry(
            exc=exc, countdown=min(600, 60 * 2**self.request.retries)
        ) from exc
    return run.status


@shared_task(
    name="rewardmodel.sweep_stale_runs",
    ignore_result=True,
    soft_time_limit=25,
    time_limit=30,
)
def sweep_stale_runs() -> int:
    """Fail training runs whose worker died (beat, every 30 s; core.jobs)."""
    from .services import training_runs_fail_stale

    return training_runs_fail_stale()


@shared_task(name="rewardmodel.nightly_retrain", time_limit=300)
def nightly_retrain() -> str:
    """Beat entry: plan the night (``services.nightly``) and hand the plan to
    ``nightly_train``, which trains one scope after another."""
    from django.db import transaction

    from .services import training_nightly

    plan = training_nightly()
    if not plan:
        return "skipped"
    transaction.on_commit(lambda: nightly_train.delay(plan))
    return "queued"


@shared_task(
    bind=True,
    name="rewardmodel.nightly_train",
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 600,
    max_retries=12,
)
def nightly_train(self, plan: list) -> str:
    """Train the first scope of the plan (a study id, or None for every study),
    then queue the rest: one run at a time. While another run is queued or
    running (someone pressed Retrain now), wait and try again."""
    from .services import training_nightly_step

    try:
        run = training_nightly_step(study_id=plan[0])
    except Conflict as exc:
        if self.request.retries >= self.max_retries:
            logger.warning("nightly retraining gave up on %s: %s", plan, exc)
            return "busy"
        raise self.retry(
            exc=exc, countdown=min(600, 60 * 2**self.request.retries)
        ) from exc
    if plan[1:]:
        nightly_train.delay(plan[1:])
    return run.status if run is not None else "gone"


@shared_task(name="rewardmodel.dealing_refresh", time_limit=900, soft_time_limit=870)
def dealing_refresh_task(study_id: int, annotator_ids: list[int] | None = None) -> int:
    """Recompute adaptive dealing's rankings (after a training run: the whole
    study; as an annotator rates: them)."""
    from .dealing import dealing_refresh

    return dealing_refresh(study_id=study_id, annotator_ids=annotator_ids)
