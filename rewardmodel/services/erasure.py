"""What the reward model holds about one erased annotator (``annotator_erased``,
sent by ``annotation``'s erasure inside its transaction): their held-out metric
and prediction rows, and their head in every checkpoint."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from django.db import transaction

from ..models import AnnotatorMetric, HeldOutPredictions, ModelVersion
from .versions import file_sha256

logger = logging.getLogger(__name__)


def annotator_model_data_erase(*, annotator_id: int) -> None:
    """Delete the annotator's rows now; rewrite the checkpoints without their
    head once the erasure commits (a rollback must leave the files as they are
    recorded)."""
    AnnotatorMetric.objects.filter(annotator_id=annotator_id).delete()
    HeldOutPredictions.objects.filter(annotator_id=annotator_id).delete()
    transaction.on_commit(lambda: checkpoints_drop_annotator(annotator_id=annotator_id))


def checkpoints_drop_annotator(*, annotator_id: int) -> int:
    """Rewrite every checkpoint that has a head for the annotator without it
    (through a temporary file, then the new checksum on the version). Returns
    how many were rewritten."""
    from ..checkpoint import checkpoint_load, checkpoint_save

    key, n = str(annotator_id), 0
    for version in ModelVersion.objects.exclude(checkpoint_path="").order_by("pk"):
        path = version.checkpoint_path
        if not os.path.isfile(path):
            continue
        model, keys, header = checkpoint_load(path)
        if key not in keys:
            continue
        i = keys.index(key)
        model.heads = _without(model.heads, i)
        model.fitted = _without(model.fitted, i)
        model.norm_mean = _without(model.norm_mean, i)
        model.norm_std = _without(model.norm_std, i)
        hyper = model.hyper  # per-head weights: one row per head too
        if hyper.blend_annotators is not None:
            hyper.blend_annotators = _without(hyper.blend_annotators, i)
        if hyper.blend_similar is not None:
            hyper.blend_similar = _without(hyper.blend_similar, i)
        if getattr(model.similar, "u", None) is not None:
            # The low-rank prior's taste factors: one row per head. What the
            # others' rows and G learnt from their ratings stays until the next
            # training, as for the shared weights.
            model.similar = replace(model.similar, u=_without(model.similar.u, i))
        meta = {k: v for k, v in header.items() if k not in _DERIVED}
        tmp = f"{path}.partial"
        checkpoint_save(tmp, model=model, keys=keys[:i] + keys[i + 1 :], meta=meta)
        os.replace(tmp, path)
        ModelVersion.objects.filter(pk=version.pk).update(
            checkpoint_sha256=file_sha256(path)
        )
        n += 1
    return n


# Header fields ``checkpoint_save`` writes itself from the model.
_DERIVED = {"format", "hyper", "kscale", "global_std"}


def _without(array, i: int):
    import numpy as np

    return np.delete(array, i, axis=0)
