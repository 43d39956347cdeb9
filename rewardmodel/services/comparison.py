"""The candidate against the active version on the same held-out ratings, in
the worker, before promotion (the method: ``rewardmodel.comparison``). The
result is stored on the training run (``TrainingRun.comparison``) and is what
automatic promotion decides on (``versions``)."""

from __future__ import annotations

import numpy as np

from .. import comparison as C
from .. import taste as T
from ..comparison import comparison_text
from ..models import ModelVersion


def _impossible(base: dict, reason: str) -> dict:
    return {**base, "possible": False, "reason": reason}


def _active_features(active, model, snap, *, emb, backbone) -> np.ndarray:
    """The active model's standardised features of the snapshot's rows (its own
    backbone's embeddings; computed here if that backbone differs)."""
    if active.backbone != backbone:
        from .. import embeddings as E

        E.embeddings_compute(backbone=active.backbone, image_ids=snap.image_ids)
        study = E.embedding_matrix(backbone=active.backbone, image_ids=snap.image_ids)
        emb = np.zeros((snap.n_rows, study.shape[1]), dtype=np.float32)
        emb[: len(snap.image_ids)] = study  # rated rows; external rows unused
    return model.feat.x(emb)


def _scored(snap, emb, result, query, *, old) -> dict:
    """Both models' predictions of the compared ratings, paired per annotator."""
    from ..training import external_targets

    ratings = T.Ratings(snap.r_row, snap.r_ann, snap.r_score)
    keys = snap.annotator_keys
    cand = C.comparison_fit(
        emb=emb,
        ratings=ratings,
        query=query,
        n_ann=len(keys),
        model=result.model,
        pop_extra=external_targets(snap),
    )
    new = C.score_query(
        cand,
        keys,
        x=cand.feat.x(emb),
        ratings=ratings,
        keys=keys,
        query=query,
        fit=~query,
    )
    old_model, old_keys, x_old, after = old
    prev = C.score_query(
        old_model,
        old_keys,
        x=x_old,
        ratings=ratings,
        keys=keys,
        query=query,
        fit=snap.r_id <= after,
    )
    return C.paired_accuracy(snap.r_ann[query], snap.r_score[query], new, prev)


def version_compare_with_active(*, run, snap, emb, result, backbone, log) -> dict:
    """The paired comparison with the version active for the run's scope (empty
    when there is none). Never raises for a comparison that cannot be made: it
    says why instead, and promotion then keeps the active version."""
    from ..checkpoint import checkpoint_load

    active = (
        ModelVersion.objects.filter(is_active=True, study_id=run.study_id)
        .select_related("training_run")
        .first()
    )
    if active is None:
        return {}
    after = getattr(active.training_run, "last_rating_id", None)
    base = {
        "against": active.pk,
        "after_rating_id": after,
        "metric": "pairwise accuracy",
        "split": "test (test_seen + test_unseen)",
    }
    if after is None:
        return _impossible(base, f"v{active.pk} does not record its training data")
    query = C.query_mask(snap.r_split, snap.r_id, after=after)
    if not query.any():
        return _impossible(
            base,
            f"no test-split rating is newer than v{active.pk}'s training data",
        )
    try:
        old_model, old_keys, _ = checkpoint_load(active.checkpoint_path)
        x_old = _active_features(active, old_model, snap, emb=emb, backbone=backbone)
    except (KeyError, ValueError) as exc:  # unreadable, or its backbone cannot embed
        return _impossible(base, f"v{active.pk} cannot be scored here ({exc})")
    paired = _scored(snap, emb, result, query, old=(old_model, old_keys, x_old, after))
    out = {**base, **paired}
    if not paired["n_annotators"]:
        return _impossible(
            out,
            f"none of the {paired['n_ratings']} test-split ratings newer than "
            f"v{active.pk}'s data gives an annotator a pair rated differently",
        )
    log(f"compared with active v{active.pk}: {comparison_text(out)}")
    return {**out, "possible": True}
