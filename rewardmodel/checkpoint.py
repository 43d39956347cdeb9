"""The deployed model on disk: one ``.npz`` of plain arrays plus a JSON header.

numpy only (``allow_pickle=False``), so the web process loads it without torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import posterior as P
from . import taste as T
from .lowrank import PairPrior
from .similar import Agreement

FORMAT = "palate-taste-npz/1"


def checkpoint_save(path: Path, *, model: T.Model, keys: list[str], meta: dict) -> None:
    prior = model.prior or P.prior_diag(model.w0.size - 2, model.hyper.rho)
    header = {
        **meta,
        "format": FORMAT,
        "hyper": model.hyper.as_dict(),
        "kscale": model.kscale,
        "global_std": model.global_std,
    }
    with open(path, "wb") as fh:
        np.savez(
            fh,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            keys=np.asarray(keys, dtype=str),
            feat_mean=model.feat.mean.astype(np.float32),
            feat_std=model.feat.std.astype(np.float32),
            feat_proj=model.feat.proj.astype(np.float32),
            w0=model.w0.astype(np.float32),
            w_new=model.newcomer_base.astype(np.float32),
            heads=model.heads.astype(np.float32),
            fitted=model.fitted,
            norm_mean=model.norm_mean,
            norm_std=model.norm_std,
            prior_diag=prior.diag,
            prior_lowrank=(
                prior.lowrank
                if prior.lowrank is not None
                else np.zeros((prior.diag.size, 0))
            ),
            prior_iso=np.asarray([prior.iso]),
            crowd_fill=(
                model.crowd_fill if model.crowd_fill is not None else np.zeros(0)
            ),
            blend_annotators=(
                model.hyper.blend_annotators
                if model.hyper.blend_annotators is not None
                else np.zeros((0, 4))
            ),
            # The similar crowd's weight per head and its constants (issue 26).
            blend_similar=(
                model.hyper.blend_similar
                if model.hyper.blend_similar is not None and model.similar is not None
                else np.zeros(0)
            ),
            similar=model.similar.as_array() if model.similar else np.zeros(0),
            **(model.similar.arrays() if isinstance(model.similar, PairPrior) else {}),
        )


def checkpoint_load(path: str | Path) -> tuple[T.Model, list[str], dict]:
    """(model, annotator keys, header). ValueError for anything that is not a
    checkpoint of this format (e.g. a torch checkpoint of an older version)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint ({exc}).") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: format {header.get('format')!r}, need {FORMAT}.")
    hyper = T.Hyper.from_dict(header["hyper"])
    per = arrays.get("blend_annotators")  # absent before per-annotator weights
    if per is not None and per.size:
        if per.shape[0] != arrays["heads"].shape[0]:
            raise ValueError(f"{path}: blend_annotators rows != heads rows.")
        hyper.blend_annotators = per.astype(np.float64)
    # Absent or empty before the similar crowd (or without it): weight 0.
    similar = Agreement.from_array(arrays.get("similar"))
    if similar is not None:  # with the low-rank prior where it was fitted with it
        similar = PairPrior.from_arrays(similar, arrays)
        u = getattr(similar, "u", None)
        if u is not None and u.shape[0] != arrays["heads"].shape[0]:
            raise ValueError(f"{path}: similar_u rows != heads rows.")
    sim_w = arrays.get("blend_similar")
    if similar is not None and sim_w is not None and sim_w.size:
        if sim_w.shape != (arrays["heads"].shape[0],):
            raise ValueError(f"{path}: blend_similar is not one weight per head.")
        hyper.blend_similar = sim_w.astype(np.float64)
    else:
        similar = None
    model = T.Model(
        feat=T.Features(arrays["feat_mean"], arrays["feat_std"], arrays["feat_proj"]),
        w0=arrays["w0"].astype(np.float64),
        heads=arrays["heads"],
        fitted=arrays["fitted"],
        norm_mean=arrays["norm_mean"],
        norm_std=arrays["norm_std"],
        hyper=hyper,
        kscale=float(header["kscale"]),
        global_std=float(header["global_std"]),
        prior=P.Prior(
            arrays["prior_diag"],
            arrays["prior_lowrank"] if arrays["prior_lowrank"].shape[1] else None,
            float(arrays["prior_iso"][0]),
        ),
        # Absent or empty in checkpoints from before it existed: unrated images
        # then get crowd 0, as they did.
        crowd_fill=(
            arrays["crowd_fill"].astype(np.float64)
            if arrays.get("crowd_fill") is not None and arrays["crowd_fill"].size
            else None
        ),
        # Checkpoints from before the newcomer base existed: newcomers used w0.
        w_new=arrays["w_new"].astype(np.float64) if "w_new" in arrays else None,
        similar=similar,
    )
    return model, [str(k) for k in arrays["keys"]], header
