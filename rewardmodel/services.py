"""Writes for the reward model: training runs, model versions, the nightly schedule.

A training run goes queued → running → succeeded / failed / skipped. "running" is
the lock: a partial unique index allows one such row, so two workers (or a worker
and a command) can never train at once, on PostgreSQL and SQLite alike. Anything
that goes wrong inside a run marks it failed with the error and leaves the model
versions exactly as they were.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from annotation.models import Annotator, Study
from core.exceptions import Conflict, InvalidInput, NotFound

from . import conf
from .models import (
    AnnotatorMetric,
    ModelVersion,
    TrainingRun,
    VersionEvent,
)

logger = logging.getLogger(__name__)

# A "running" row whose heartbeat is older than this belongs to a dead worker.
STALE_AFTER = timedelta(hours=3)
MIN_RATINGS = 10
NIGHTLY_TASK_NAME = "rewardmodel: nightly retraining"
NIGHTLY_TASK = "rewardmodel.nightly_retrain"

ProgressFn = Callable[[str, float, dict], None]


# --- training runs ------------------------------------------------------------


def training_runs_fail_stale(*, now=None) -> int:
    now = now or timezone.now()
    return TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING, heartbeat_at__lt=now - STALE_AFTER
    ).update(
        status=TrainingRun.Status.FAILED,
        error="The worker stopped sending heartbeats (crashed or killed).",
        finished_at=now,
    )


def training_run_create(
    *,
    study: Study | None = None,
    trigger: str = TrainingRun.Trigger.API,
    promote: str = TrainingRun.Promote.AUTO,
    config: dict | None = None,
    user=None,
) -> TrainingRun:
    """A queued run. Refused (Conflict) while another run is queued or running."""
    if promote not in TrainingRun.Promote.values:
        raise InvalidInput(f"promote must be one of {', '.join(TrainingRun.Promote)}.")
    if trigger not in TrainingRun.Trigger.values:
        raise InvalidInput(f"Unknown trigger '{trigger}'.")
    config = dict(config or {})
    if "seed" in config and not isinstance(config["seed"], int):
        raise InvalidInput("seed must be an integer.")
    training_runs_fail_stale()
    with transaction.atomic():
        busy = (
            TrainingRun.objects.select_for_update()
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
    from .tasks import train_reward_model

    run = training_run_create(**kwargs)
    transaction.on_commit(lambda: train_reward_model.delay(run.pk))
    return run


def _start(run_id: int) -> bool:
    now = timezone.now()
    try:
        with transaction.atomic():
            started = TrainingRun.objects.filter(
                pk=run_id, status=TrainingRun.Status.QUEUED
            ).update(
                status=TrainingRun.Status.RUNNING,
                started_at=now,
                heartbeat_at=now,
                stage="starting",
            )
    except IntegrityError:
        raise Conflict("Another training run is in progress.") from None
    return started == 1


class _Log:
    """Collects the run's log lines (stored on the run and the version)."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.lines: list[str] = []

    def __call__(self, msg: str, *, level: int = logging.INFO) -> None:
        logger.log(level, "training #%s: %s", self.run.pk, msg)
        stamp = timezone.now().strftime("%H:%M:%S")
        self.lines.append(f"{stamp} {msg}")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def training_run_execute(
    *, run_id: int, on_progress: ProgressFn | None = None
) -> TrainingRun:
    """Run a queued training run to the end. Idempotent: a run that is no longer
    queued is returned as it is. Raises Conflict when another run holds the lock."""
    try:
        run = TrainingRun.objects.get(pk=run_id)
    except TrainingRun.DoesNotExist:
        raise NotFound(f"No training run {run_id}.") from None
    if run.status != TrainingRun.Status.QUEUED:
        return run
    training_runs_fail_stale()
    if not _start(run_id):
        return TrainingRun.objects.get(pk=run_id)
    run.refresh_from_db()
    log = _Log(run)
    started = time.monotonic()
    try:
        version = _train(run, log, started=started, on_progress=on_progress)
    except Exception as exc:  # any failure: record it, keep the active version
        log(f"FAILED: {type(exc).__name__}: {exc}", level=logging.ERROR)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            log=log.text + "\n" + traceback.format_exc(),
            finished_at=timezone.now(),
        )
        run.refresh_from_db()
        return run
    if run.promote != TrainingRun.Promote.NEVER:
        model_version_promote(
            version=version,
            force=run.promote == TrainingRun.Promote.ALWAYS,
            user=run.created_by,
            reason=f"training run #{run.pk} (promote={run.promote})",
        )
    else:
        _record_event(
            version,
            VersionEvent.Action.NOT_PROMOTED,
            "promote=never: kept as a candidate",
            None,
            run.created_by,
        )
    run.refresh_from_db()
    return run


def _progress(
    run: TrainingRun,
    on_progress: ProgressFn | None,
    stage: str,
    fraction: float,
    info: dict | None = None,
) -> None:
    fraction = min(max(fraction, 0.0), 1.0)
    TrainingRun.objects.filter(pk=run.pk).update(
        stage=stage, progress=fraction, heartbeat_at=timezone.now()
    )
    if on_progress is not None:
        on_progress(stage, fraction, info or {})


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _train(
    run: TrainingRun, log: _Log, *, started: float, on_progress: ProgressFn | None
) -> ModelVersion:
    import numpy as np

    from . import data as D
    from . import embeddings as E
    from .models import Embedding, ExternalItem
    from .training import DEFAULT_CONFIG, train_and_evaluate

    cfg = {**DEFAULT_CONFIG, **run.config}
    seed = int(cfg.get("seed", 0))
    backbone = cfg.get("backbone") or conf.backbone_key()
    cfg["seed"], cfg["backbone"] = seed, backbone
    log(f"backbone {backbone}, seed {seed}")

    _progress(run, on_progress, "snapshot", 0.01)
    snap = D.snapshot_take(study_id=run.study_id)
    TrainingRun.objects.filter(pk=run.pk).update(last_rating_id=snap.last_rating_id)
    log(f"snapshot: {snap.counts}")
    if snap.r_score.size < MIN_RATINGS:
        raise InvalidInput(
            f"Only {snap.r_score.size} usable ratings; at least {MIN_RATINGS} needed."
        )

    _progress(run, on_progress, "embedding", 0.02)
    emb_info = E.embeddings_compute(
        backbone=backbone,
        image_ids=snap.image_ids,
        on_progress=lambda i, n: _progress(
            run, on_progress, "embedding", 0.02 + 0.2 * i / max(n, 1)
        ),
    )
    ext_items = list(
        ExternalItem.objects.filter(pk__in=list(snap.ext_item_rows)).order_by("pk")
    )
    E.external_embeddings_compute(backbone=backbone, item_ids=[i.pk for i in ext_items])
    log(f"embeddings: {emb_info['computed']} computed, rest cached")
    emb = np.zeros((snap.n_rows, 0), dtype=np.float32)
    study_emb = E.embedding_matrix(backbone=backbone, image_ids=snap.image_ids)
    emb = np.zeros((snap.n_rows, study_emb.shape[1]), dtype=np.float32)
    emb[: len(snap.image_ids)] = study_emb
    own_rows = [
        it for it in ext_items if snap.ext_item_rows[it.pk] >= len(snap.image_ids)
    ]
    if own_rows:
        ext_emb = E.external_embedding_matrix(backbone=backbone, items=own_rows)
        for it, vec in zip(own_rows, ext_emb, strict=True):
            emb[snap.ext_item_rows[it.pk]] = vec
    weights_loaded = not Embedding.objects.filter(
        backbone=backbone, image_id__in=snap.image_ids, weights_loaded=False
    ).exists()
    warning = emb_info.get("warning") or ""
    if not weights_loaded:
        warning = warning or (
            f"Embeddings of {backbone} were computed with RANDOM weights "
            "(pretrained weights could not be loaded)."
        )
        log(f"WARNING: {warning}", level=logging.WARNING)

    every = max(1, int(cfg["steps"]) // 20)

    def on_step(step: int, total: int, info: dict) -> None:
        if step % every == 0 or step == total:
            _progress(run, on_progress, "training", 0.25 + 0.6 * step / total, info)

    result = train_and_evaluate(
        snap=snap,
        emb=emb,
        cfg=cfg,
        on_step=on_step,
        log=log,
        on_stage=lambda stage, f: _progress(run, on_progress, stage, f),
    )
    model, summary, per_annotator, counts = (
        result.model,
        result.summary,
        result.per_annotator,
        result.counts,
    )
    _progress(run, on_progress, "saving", 0.95)
    import torch

    ckpt = model.checkpoint(
        backbone=backbone, weights_loaded=weights_loaded, **result.checkpoint_extra
    )
    path = conf.checkpoint_dir() / f"run{run.pk}-{timezone.now():%Y%m%dT%H%M%S}.pt"
    torch.save(ckpt, path)
    checksum = _sha256(path)
    duration = time.monotonic() - started
    log(f"checkpoint {path} sha256 {checksum[:12]}…, {duration:.1f}s")

    with transaction.atomic():
        version = ModelVersion.objects.create(
            training_run=run,
            study=run.study,
            backbone=backbone,
            weights_loaded=weights_loaded,
            backbone_warning=warning,
            config=cfg,
            data_counts=counts,
            metrics=summary,
            primary_metric=summary["primary_metric"],
            checkpoint_path=str(path),
            checkpoint_sha256=checksum,
            duration_s=duration,
            log=log.text,
        )
        pks = {
            str(pk)
            for pk in Annotator.objects.filter(
                pk__in=[int(r["annotator"]) for r in per_annotator]
            ).values_list("pk", flat=True)
        }
        AnnotatorMetric.objects.bulk_create(
            [
                AnnotatorMetric(
                    version=version,
                    annotator_id=int(r["annotator"]) if r["annotator"] in pks else None,
                    split=r["split"],
                    k=r["k"],
                    n_test=r["n_test"],
                    baselines={
                        b: r[b]
                        for b in ("population", "annotator_mean", "loo_consensus")
                    },
                    **r["model"],
                )
                for r in per_annotator
            ]
        )
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.SUCCEEDED,
            progress=1.0,
            stage="done",
            finished_at=timezone.now(),
            log=log.text,
        )
    if on_progress is not None:
        on_progress("done", 1.0, {"primary_metric": summary["primary_metric"]})
    return version


# --- versions -----------------------------------------------------------------


def _record_event(version, action, reason, previous, user) -> VersionEvent:
    return VersionEvent.objects.create(
        version=version,
        action=action,
        reason=reason,
        previous=previous,
        user=user
        if user is not None and getattr(user, "is_authenticated", False)
        else None,
    )


def _activate(version: ModelVersion, reason: str) -> ModelVersion | None:
    previous = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    if previous is not None and previous.pk != version.pk:
        # Deactivate first: the one-active constraint is checked per statement.
        previous.is_active = False
        previous.status = ModelVersion.Status.RETIRED
        previous.save(update_fields=["is_active", "status"])
    version.is_active = True
    version.status = ModelVersion.Status.ACTIVE
    version.promoted_at = timezone.now()
    version.promotion_reason = reason
    version.save(
        update_fields=["is_active", "status", "promoted_at", "promotion_reason"]
    )
    return previous


def model_version_promote(
    *, version: ModelVersion, force: bool = False, user=None, reason: str = ""
) -> bool:
    """Make ``version`` active if its primary metric is at least the active one's
    (or ``force``). Records the decision and its reason either way."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        active = ModelVersion.objects.select_for_update().filter(is_active=True).first()
        if active is not None and active.pk == version.pk:
            return True
        new, old = version.primary_metric, active.primary_metric if active else None
        if force:
            why = f"forced ({reason})" if reason else "forced"
        elif active is None:
            why = "first version: no active version to compare with"
        elif new is not None and (old is None or new >= old):
            why = f"primary metric {new:.4f} ≥ active v{active.pk}'s " + (
                f"{old:.4f}" if old is not None else "(none)"
            )
        else:
            why = (
                f"primary metric {_fmt(new)} < active v{active.pk}'s {_fmt(old)}: "
                "kept as a candidate"
            )
            version.promotion_reason = why
            version.save(update_fields=["promotion_reason"])
            _record_event(version, VersionEvent.Action.NOT_PROMOTED, why, active, user)
            return False
        if reason and not force:
            why = f"{why} ({reason})"
        previous = _activate(version, why)
        _record_event(version, VersionEvent.Action.PROMOTED, why, previous, user)
    return True


def _fmt(v) -> str:
    return "none" if v is None else f"{v:.4f}"


def model_version_rollback(
    *, version: ModelVersion, user=None, reason: str = ""
) -> ModelVersion:
    """Make an earlier version active again, whatever its metric."""
    from pathlib import Path

    if not Path(version.checkpoint_path).is_file():
        raise Conflict(f"v{version.pk}'s checkpoint file is missing; cannot roll back.")
    if _sha256(version.checkpoint_path) != version.checkpoint_sha256:
        raise Conflict(f"v{version.pk}'s checkpoint does not match its checksum.")
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.is_active:
            raise Conflict(f"v{version.pk} is already the active version.")
        why = f"rollback to v{version.pk}" + (f": {reason}" if reason else "")
        previous = _activate(version, why)
        _record_event(version, VersionEvent.Action.ROLLED_BACK, why, previous, user)
    return version


# --- the nightly schedule -----------------------------------------------------


def nightly_schedule_ensure():
    """The beat entry for nightly retraining (created once; admins edit its time
    in Django admin → Periodic tasks, no deploy needed)."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    existing = PeriodicTask.objects.filter(name=NIGHTLY_TASK_NAME).first()
    if existing is not None:
        return existing
    crontab, _ = CrontabSchedule.objects.get_or_create(
        **conf.nightly_crontab(), timezone="UTC"
    )
    return PeriodicTask.objects.create(
        name=NIGHTLY_TASK_NAME,
        task=NIGHTLY_TASK,
        crontab=crontab,
        description="Retrain the personalized reward model when new ratings arrived.",
    )


def new_ratings_since_last_run(*, study_id: int | None = None) -> bool:
    from .data import ratings_queryset

    newest = ratings_queryset(study_id=study_id).aggregate(m=Max("pk"))["m"]
    if newest is None:
        return False
    last = TrainingRun.objects.filter(
        status=TrainingRun.Status.SUCCEEDED, study_id=study_id
    ).aggregate(m=Max("last_rating_id"))["m"]
    return last is None or newest > last


def training_nightly(*, study: Study | None = None) -> TrainingRun:
    """The nightly entry point: a run when ratings arrived since the last
    successful run, else a run recorded as skipped (so the admin sees it ran)."""
    study_id = study.pk if study else None
    if not new_ratings_since_last_run(study_id=study_id):
        return TrainingRun.objects.create(
            study=study,
            trigger=TrainingRun.Trigger.SCHEDULE,
            status=TrainingRun.Status.SKIPPED,
            stage="no new ratings",
            finished_at=timezone.now(),
        )
    return training_run_create(study=study, trigger=TrainingRun.Trigger.SCHEDULE)


# --- external ratings ---------------------------------------------------------


def external_ratings_import(
    *,
    study: Study,
    rows: list[dict],
    source_name: str,
    base_dir=None,
    kind: str | None = None,
    scale_min: float | None = None,
    scale_max: float | None = None,
    weight: float = 0.5,
    description: str = "",
) -> dict:
    """Import external aesthetic scores into a source attached to ``study``.

    Each row has ``score`` and one way to find the image: ``image`` (a study image
    id), ``sha256`` (of a study image) or ``path`` (a file, relative to
    ``base_dir``; embedded like any image, never shown to annotators). A ``user``
    column makes it per-user ratings; otherwise each row is a population mean
    (optional ``n``: how many ratings it averages). Re-importing updates scores.
    """
    from pathlib import Path

    from annotation.models import Image

    from .models import ExternalItem, ExternalScore, ExternalSource

    if not rows:
        raise InvalidInput("No rows to import.")
    per_user = any(str(r.get("user") or "").strip() for r in rows)
    kind = kind or ("per_user" if per_user else "population")
    if kind not in ExternalSource.Kind.values:
        raise InvalidInput(f"kind must be one of {', '.join(ExternalSource.Kind)}.")
    parsed = []
    for n, r in enumerate(rows, start=1):
        try:
            score = float(r["score"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(
                f"row {n}: 'score' is missing or not a number."
            ) from None
        rater = str(r.get("user") or "").strip()
        if kind == "per_user" and not rater:
            raise InvalidInput(f"row {n}: per-user ratings need a 'user'.")
        parsed.append((n, r, score, rater))
    scores = [p[2] for p in parsed]
    lo = min(scores) if scale_min is None else scale_min
    hi = max(scores) if scale_max is None else scale_max
    if lo >= hi:
        raise InvalidInput(
            "The scale needs scale_min < scale_max (give --scale-min/--scale-max)."
        )
    bad = [n for n, _, s, _ in parsed if not lo <= s <= hi]
    if bad:
        raise InvalidInput(f"rows {bad[:5]}: score outside [{lo}, {hi}].")
    base = Path(base_dir) if base_dir else Path.cwd()
    images_by_id = dict(Image.objects.filter(study=study).values_list("pk", "pk"))
    images_by_sha = dict(Image.objects.filter(study=study).values_list("sha256", "pk"))
    resolved = []
    for n, r, score, rater in parsed:
        image_id, path, key = None, "", ""
        if str(r.get("image") or "").strip():
            try:
                image_id = images_by_id[int(r["image"])]
            except (KeyError, ValueError):
                raise InvalidInput(
                    f"row {n}: image {r['image']} is not in study '{study.slug}'."
                ) from None
            key = f"image:{image_id}"
        elif str(r.get("sha256") or "").strip():
            image_id = images_by_sha.get(str(r["sha256"]).strip())
            if image_id is None:
                raise InvalidInput(f"row {n}: no image with that sha256 in the study.")
            key = f"image:{image_id}"
        elif str(r.get("path") or "").strip():
            p = Path(str(r["path"]).strip())
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise InvalidInput(f"row {n}: file {p} not found.")
            path = str(p.resolve())
            key = f"path:{path}"
        else:
            raise InvalidInput(f"row {n}: needs one of 'image', 'sha256' or 'path'.")
        n_ratings = r.get("n")
        n_ratings = int(n_ratings) if n_ratings not in (None, "") else None
        resolved.append((key, image_id, path, rater, score, n_ratings))
    created = updated = 0
    with transaction.atomic():
        source, _ = ExternalSource.objects.get_or_create(
            name=source_name,
            defaults={
                "study": study,
                "kind": kind,
                "scale_min": lo,
                "scale_max": hi,
                "weight": weight,
                "description": description,
            },
        )
        if source.kind != kind:
            raise InvalidInput(f"Source '{source_name}' holds {source.kind} scores.")
        items = {}
        for key, image_id, path, rater, score, n_ratings in resolved:
            if key not in items:
                items[key], _ = ExternalItem.objects.get_or_create(
                    source=source,
                    key=key[:300],
                    defaults={"image_id": image_id, "path": path},
                )
            _, was_created = ExternalScore.objects.update_or_create(
                item=items[key],
                rater=rater,
                defaults={"score": score, "n_ratings": n_ratings},
            )
            created += was_created
            updated += not was_created
    return {
        "source": source.name,
        "kind": kind,
        "items": len(items),
        "created": created,
        "updated": updated,
        "scale": [lo, hi],
    }
