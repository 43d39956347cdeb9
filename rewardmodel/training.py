"""From a data snapshot to a deployable model and its report (numpy, no DB).

``train_and_evaluate``: select hyper-parameters on validation (``selection.select``),
report test metrics next to the baselines (``evaluation.report``), then refit the
deployed model on every rating with the selected hyper-parameters. The benchmarks
call it too, on the same code path as the training service.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import evaluation as V
from . import lowrank as LR
from . import posterior as P
from . import selection as Sel
from . import taste as T

# "similar": the similarity-weighted crowd as a fifth blend member (issue 26,
# ``crowd.Similar``; served by ``similar.Served``), its agreements shrunk toward
# the low-rank prior (``LOWRANK``; RESULTS.md "Issue 26: … helper lowrank2");
# true: toward one global mean, as before 2026-12-07.
DEFAULT_CONFIG = {"ks": [0, 5, 10, 20], "seed": 0, "similar": "lowrank"}
# Used where a split has too little data to choose from (tiny studies).
FALLBACK = T.Hyper(pop_lambda=1.0, tau2_rel=1.0, rho=3.0)
MIN_TRAIN = 10


@dataclass
class Result:
    model: T.Model  # the deployed model (refit on everything)
    summary: dict
    per_annotator: list
    counts: dict
    # The report fit's predictions on each annotator's held-out images
    # (evaluation.HeldOut); the deployed model, refit on everything, has none.
    heldout: list = field(default_factory=list)


def _data(snap, emb: np.ndarray, cfg: dict) -> V.Data:
    return V.Data(
        emb=emb,
        ratings=T.Ratings(snap.r_row, snap.r_ann, snap.r_score),
        split=snap.r_split,
        n_ann=len(snap.annotator_keys),
        ks=[int(k) for k in cfg["ks"]],
        seed=int(cfg["seed"]),
        blend_mode=cfg.get("blend_mode"),
        similar=similar_config(cfg.get("similar", DEFAULT_CONFIG["similar"])),
    )


# ``"similar": "lowrank"``: the prior's setting chosen on tuning seeds 0-3
# (rank 4, λ 5, cross-fitted, capped; RESULTS.md "Issue 26: low-rank
# agreement prior"), so that nobody has to spell its five numbers.
LOWRANK = (4, 5.0, 1.0, 0.0, 1.0)


def similar_config(value) -> bool | tuple:
    """Training config ``similar``: true / false, ``"lowrank"`` (``LOWRANK``)
    or [rank, λ, cross, 0, cap]: the member with ``lowrank``'s agreement
    prior. ValueError for anything else."""
    if isinstance(value, bool):
        return value
    if value == "lowrank":
        return LOWRANK
    cfg = tuple(value) if isinstance(value, list | tuple) else ()
    if not 2 <= len(cfg) <= 5 or not all(isinstance(v, int | float) for v in cfg):
        raise ValueError(
            'similar must be true, false, "lowrank" or [rank, λ, cross, 0, cap]; '
            f"got {value!r}."
        )
    if int(cfg[0]) < 1 or cfg[1] <= 0 or (len(cfg) > 3 and cfg[3]):
        raise ValueError(
            f"similar {value!r}: the prior needs rank ≥ 1, λ > 0 and everyone 0 "
            "(the served path weighs pairs who never co-rated by the base)."
        )
    return (int(cfg[0]), *(float(v) for v in cfg[1:]))


def hyper_select(data: V.Data, log: Callable[[str], None]) -> tuple:
    """The validation-selected hyper-parameters and prior (the fallback where
    validation has nobody to choose with)."""
    hyper, prior, selection = Sel.select(data, blend_mode=data.blend_mode)
    if not _usable(selection["population_lambda"].values()):
        log("no usable validation pairs for the population head: default λ")
        hyper.pop_lambda = FALLBACK.pop_lambda
    if not _usable([selection["val_seen_pairwise_accuracy"]]):
        log("no usable val_seen pairs: default base, τ² and ρ")
        hyper.tau2_rel, hyper.rho, hyper.gamma = FALLBACK.tau2_rel, FALLBACK.rho, 0.0
        hyper.base = hyper.new_base = FALLBACK.base
        hyper.pop_lambda, hyper.new_lambda = FALLBACK.pop_lambda, None
        hyper.new_tau2_rel = None
        prior = P.prior_diag(data.feat.proj.shape[1], hyper.rho)
    return hyper, prior, selection


def _usable(values) -> bool:
    return any(v is not None and v == v and v >= 0 for v in values)


def json_clean(value):
    """NaN, ±inf → None and numpy scalars → Python (JSON columns refuse them)."""
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and ±inf: JSON columns refuse both
    return value


def fields_text(fields: dict) -> str:
    """``key=value, ...`` with plain numbers, for log lines: the repr of a dict
    holding numpy scalars prints ``np.float64(0.3)`` (numpy ≥ 2)."""

    def text(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "none" if v is None else str(v)

    return ", ".join(f"{k}={text(v)}" for k, v in json_clean(fields).items())


def external_targets(snap) -> tuple[np.ndarray, np.ndarray]:
    """External population scores as (rows, z-scores per source) for the
    population head, weighted by repetition of their source's weight."""
    if not snap.e_score.size:
        return np.zeros(0, np.int64), np.zeros(0)
    rows, ys = [], []
    for s, src in enumerate(snap.sources):
        sel = snap.e_src == s
        sc = snap.e_score[sel]
        z = (sc - sc.mean()) / max(float(sc.std()), 1e-6)
        reps = max(1, int(round(float(src["weight"]) * 2)))
        rows += [snap.e_row[sel]] * reps
        ys += [z] * reps
    return np.concatenate(rows), np.concatenate(ys)


def train_and_evaluate(
    *, snap, emb: np.ndarray, cfg: dict, log: Callable[[str], None] = lambda m: None
) -> Result:
    cfg = {**DEFAULT_CONFIG, **cfg}
    data = _data(snap, emb, cfg)
    counts = {**snap.counts}
    log(f"data: {fields_text(counts)}")
    if counts["ratings_train"] < MIN_TRAIN:
        raise ValueError(
            f"Only {counts['ratings_train']} ratings in the train split; at least "
            f"{MIN_TRAIN} needed."
        )
    hyper, prior, selection = hyper_select(data, log)
    log(f"selected on validation: {fields_text(hyper.as_dict())}")
    tuned = Sel.tune_baselines(data)
    summary, rows, heldout = V.report(data, hyper, tuned, prior)
    summary["selection"] = selection
    summary["hyper"] = hyper.as_dict()
    summary["baseline_hyper"] = {
        "population_lambda": tuned.pop_lambda,
        "per_annotator_ridge_tau2_rel": tuned.ridge_tau2_rel,
    }
    # Promotion reads this: a validation figure, never a test one.
    summary["primary_metric"] = _finite(selection["val_seen_pairwise_accuracy"])
    # Selection's and the report's views, heads and decompositions are done
    # with: let them go before the refit builds the features of every rating,
    # so the peak is the larger of the two phases, not their sum.
    x = data.heads_memo.get("x")
    data.heads_memo.clear()
    model = T.fit_heads(
        emb=emb,
        fit=data.ratings,
        n_ann=data.n_ann,
        hyper=hyper,
        pop_extra=external_targets(snap),
        prior=prior,
        feat=data.feat,
        x=x,
    )
    model = LR.with_prior(model, data.ratings, emb.shape[0], data.similar)
    log(f"deployed model refit on all {len(data.ratings)} ratings")
    return Result(
        model=model,
        summary=json_clean(summary),
        per_annotator=json_clean(rows),
        counts=counts,
        heldout=heldout,
    )


def _finite(v) -> float | None:
    return float(v) if v is not None and v == v and v >= 0 else None
