"""One training run's work: snapshot → embeddings → select/report/refit → checkpoint
→ ModelVersion and per-annotator metrics. Called by ``runs.training_run_execute``.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from django.db import transaction
from django.utils import timezone

from annotation.studies.models import Annotator

from .. import conf
from ..models import (
    AnnotatorMetric,
    Embedding,
    HeldOutPredictions,
    ModelVersion,
    TrainingRun,
)
from .comparison import version_compare_with_active
from .runs import ProgressFn, RunLog, run_progress
from .versions import file_sha256

MIN_RATINGS = 10


def embedding_matrix_for(
    snap, *, backbone: str, report, log=None
) -> tuple[np.ndarray, dict]:
    """Embed what is missing (study images and external items with files) and
    return one matrix whose rows follow the snapshot."""
    from .. import embeddings as E
    from ..models import ExternalItem

    info = E.embeddings_compute(
        backbone=backbone,
        image_ids=snap.image_ids,
        on_progress=lambda i, n: report(i / max(n, 1)),
        log=log,
    )
    items = list(
        ExternalItem.objects.filter(pk__in=list(snap.ext_item_rows)).order_by("pk")
    )
    E.external_embeddings_compute(backbone=backbone, item_ids=[i.pk for i in items])
    study_emb = E.embedding_matrix(backbone=backbone, image_ids=snap.image_ids)
    emb = np.zeros((snap.n_rows, study_emb.shape[1]), dtype=np.float32)
    emb[: len(snap.image_ids)] = study_emb
    own = [it for it in items if snap.ext_item_rows[it.pk] >= len(snap.image_ids)]
    if own:
        ext = E.external_embedding_matrix(backbone=backbone, items=own)
        for it, vec in zip(own, ext, strict=True):
            emb[snap.ext_item_rows[it.pk]] = vec
    return emb, info


def _weights_warning(snap, *, backbone: str, info: dict, log: RunLog) -> tuple:
    weights_loaded = not Embedding.objects.filter(
        backbone=backbone, image_id__in=snap.image_ids, weights_loaded=False
    ).exists()
    warning = info.get("warning") or ""
    if not weights_loaded:
        warning = warning or (
            f"Embeddings of {backbone} were computed with RANDOM weights "
            "(pretrained weights could not be loaded)."
        )
        log(f"WARNING: {warning}", level=logging.WARNING)
    return weights_loaded, warning


def model_version_build(
    *, run: TrainingRun, log: RunLog, started: float, on_progress: ProgressFn | None
) -> ModelVersion:
    from .. import snapshot as D
    from ..threads import compute_threads
    from ..training import DEFAULT_CONFIG, fields_text, train_and_evaluate

    cfg = {**DEFAULT_CONFIG, **run.config}
    cfg["seed"] = int(cfg.get("seed", 0))
    backbone = cfg["backbone"] = cfg.get("backbone") or conf.backbone_key()
    log(f"backbone {backbone}, seed {cfg['seed']}")

    run_progress(run, on_progress, "snapshot", 0.01)
    snap = D.snapshot_take(study_id=run.study_id)
    TrainingRun.objects.filter(pk=run.pk).update(last_rating_id=snap.last_rating_id)
    log(f"snapshot: {fields_text(snap.counts)}")
    if snap.r_score.size < MIN_RATINGS:
        from core.exceptions import InvalidInput

        raise InvalidInput(
            f"Only {snap.r_score.size} usable ratings; at least {MIN_RATINGS} needed."
        )
    run_progress(run, on_progress, "embedding", 0.02)
    emb, info = embedding_matrix_for(
        snap,
        backbone=backbone,
        report=lambda f: run_progress(run, on_progress, "embedding", 0.02 + 0.6 * f),
        log=log,
    )
    log(f"embeddings: {info['computed']} computed, rest cached")
    weights_loaded, warning = _weights_warning(
        snap, backbone=backbone, info=info, log=log
    )
    run_progress(run, on_progress, "fitting", 0.65)
    with compute_threads():
        result = train_and_evaluate(snap=snap, emb=emb, cfg=cfg, log=log)
        run_progress(run, on_progress, "comparing with the active version", 0.9)
        comparison = version_compare_with_active(
            run=run, snap=snap, emb=emb, result=result, backbone=backbone, log=log
        )
    TrainingRun.objects.filter(pk=run.pk).update(comparison=comparison)
    run_progress(run, on_progress, "saving", 0.95)
    path = _checkpoint_write(run, result, snap, backbone, weights_loaded)
    version = _record(
        run,
        result,
        snap,
        path=path,
        cfg=cfg,
        weights=(weights_loaded, warning),
        duration=time.monotonic() - started,
        log=log,
    )
    if on_progress is not None:
        on_progress("done", 1.0, {"primary_metric": result.summary["primary_metric"]})
    return version


def _checkpoint_write(run, result, snap, backbone, weights_loaded):
    from ..checkpoint import checkpoint_save

    path = conf.checkpoint_dir() / f"run{run.pk}-{timezone.now():%Y%m%dT%H%M%S}.npz"
    # Written under a temporary name and renamed when complete: a worker killed
    # mid-write leaves ``.run<pk>-….partial``, which the sweep deletes.
    tmp = path.with_name(f".{path.name}.partial")
    checkpoint_save(
        tmp,
        model=result.model,
        keys=snap.annotator_keys,
        meta={
            "backbone": backbone,
            "weights_loaded": weights_loaded,
            "scale": list(snap.scale),
            "study": run.study_id,
        },
    )
    os.replace(tmp, path)
    return path


def _known_annotators(snap) -> set[int]:
    """Annotators still present (one erased since the snapshot has no row)."""
    pks = [int(k) for k in snap.annotator_keys]
    return set(Annotator.objects.filter(pk__in=pks).values_list("pk", flat=True))


def _metric_rows(version, result, snap, known: set[int]) -> list[AnnotatorMetric]:
    keys = snap.annotator_keys
    rows = []
    for r in result.per_annotator:
        pk = int(keys[r["annotator"]])
        ci = r.get("mae_ci95") or (None, None)
        rows.append(
            AnnotatorMetric(
                version=version,
                annotator_id=pk if pk in known else None,
                split=r["split"],
                k=r["k"],
                n_test=r["n_test"],
                mae_ci_low=ci[0],
                mae_ci_high=ci[1],
                baselines={
                    b: r[b]
                    for b in ("population", "per_annotator_ridge", "loo_consensus")
                },
                **r["model"],
            )
        )
    return rows


def _heldout_rows(version, result, snap, known: set[int]) -> list[HeldOutPredictions]:
    """One row per annotator: their held-out images (at most MAX_POINTS, a sample
    seeded by the run's seed beyond that) with score and prediction."""
    cap = HeldOutPredictions.MAX_POINTS
    image_ids = np.asarray(snap.image_ids, dtype=np.int64)
    out = []
    for h in result.heldout:
        pk = int(snap.annotator_keys[h.annotator])
        if pk not in known or h.rows.size == 0:
            continue
        keep = np.arange(h.rows.size)
        if keep.size > cap:
            # By the annotator's place in the key order, not their id: the
            # same data keeps the same sample in any database.
            seed = [int(version.config.get("seed", 0)), int(h.annotator)]
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(keep.size, size=cap, replace=False))
        out.append(
            HeldOutPredictions(
                version=version,
                annotator_id=pk,
                split=h.split,
                k=h.k,
                n_total=int(h.rows.size),
                n=int(keep.size),
                image_ids=image_ids[h.rows[keep]].astype("<i8").tobytes(),
                actual=np.asarray(h.actual)[keep].astype("<f4").tobytes(),
                predicted=np.asarray(h.predicted)[keep].astype("<f4").tobytes(),
            )
        )
    return out


def _record(run, result, snap, *, path, cfg, weights, duration, log) -> ModelVersion:
    checksum = file_sha256(path)
    log(f"checkpoint {path} sha256 {checksum[:12]}…, {duration:.1f}s")
    with transaction.atomic():
        version = ModelVersion.objects.create(
            training_run=run,
            study=run.study,
            backbone=cfg["backbone"],
            weights_loaded=weights[0],
            backbone_warning=weights[1],
            config=cfg,
            data_counts=result.counts,
            metrics=result.summary,
            primary_metric=result.summary["primary_metric"],
            checkpoint_path=str(path),
            checkpoint_sha256=checksum,
            duration_s=duration,
            log=log.text,
        )
        known = _known_annotators(snap)
        AnnotatorMetric.objects.bulk_create(
            _metric_rows(version, result, snap, known), batch_size=1000
        )
        HeldOutPredictions.objects.bulk_create(
            _heldout_rows(version, result, snap, known), batch_size=500
        )
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.SUCCEEDED,
            progress=1.0,
            stage="done",
            finished_at=timezone.now(),
            log=log.text,
        )
    return version
