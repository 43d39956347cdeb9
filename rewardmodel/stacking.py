"""Stacking the family's members instead of keeping one (issue 26).

The deployed head of every fitted annotator is a non-negative blend of four
members, each linear in the same features [x, crowd, 1], so the blend is itself
one head per annotator:

    h_a = w_model · model_a + w_population · pop + w_ridge · ridge_a
          + w_consensus · consensus

(``model``: the grid configuration chosen on val_seen; ``population``: the
content ridge at the population baseline's λ; ``ridge``: the per-annotator ridge
on content, crowd weight 0; ``consensus``: the crowd column and intercept, the
leave-one-out consensus's form). Everything is learnt on val_seen, from the
members' predictions **out of fold** (its annotators in two seeded folds; each
fold's model predictions come from the configuration chosen on the other fold):

* **weights** (``choose_weights``): non-negative least squares of the ratings on
  the members' predictions, both centred per annotator (pairwise accuracy only
  sees each annotator's own ordering) and the predictions standardised, over
  the subset of members with the best BIC (a member that adds nothing gets
  exactly 0), then one least-squares scale (for MAE). Smooth, unlike the
  earlier argmax of pairwise accuracy over a simplex, which jumped between
  corners on noise: bagging it over resamples gave blends worse, on the very
  validation ratings they were chosen on, than the best member alone
  (issue 26's tiny-clip runs);
* **blend or best member** (``blend_out_of_fold``): weights chosen on one fold
  and the best single member chosen on the same fold are compared on the other
  fold's annotators (paired, both directions); the blend is kept only if it
  beats the best member by ``PREFER_BLEND_Z`` standard errors, else the head
  *is* the best member (so where one member is best, e.g. the consensus on
  features that carry no taste, the model ties it rather than trading it for
  noise). Too few validation annotators: the best member.

Only train and validation ratings are read.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from .metrics import PairScorer, mean_pairwise
from .taste import forward

MEMBERS = ("model", "population", "ridge", "consensus")
# The blend must beat the best single member by this many standard errors of
# the paired per-annotator difference, out of fold (nested), to be kept.
PREFER_BLEND_Z = 1.0
MIN_BLEND_ANNOTATORS = 20  # fewer val_seen annotators: the best member alone


def centred(p: np.ndarray, ann: np.ndarray) -> np.ndarray:
    """``p`` (n,) or (n, M) less each annotator's mean."""
    cnt = np.maximum(np.bincount(ann), 1).astype(np.float64)
    if p.ndim == 1:
        return p - (np.bincount(ann, weights=p) / cnt)[ann]
    means = np.stack([np.bincount(ann, weights=c) for c in p.T], 1) / cnt[:, None]
    return p - means[ann]


def nnls_bic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares of ``b`` on the columns of ``a`` (M ≤ 6),
    exactly, over the subset of columns with the lowest BIC: every subset is
    solved, those with a negative weight dropped."""
    n, m = a.shape
    best, best_bic = np.zeros(m), n * math.log(max(float(b @ b), 1e-300) / n)
    for size in range(1, m + 1):
        for cols in combinations(range(m), size):
            sub = a[:, cols]
            w, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if (w < 0).any():
                continue
            sse = float(np.sum((b - sub @ w) ** 2))
            bic = n * math.log(max(sse, 1e-300) / n) + size * math.log(n)
            if bic < best_bic - 1e-9:
                best_bic, best = bic, np.zeros(m)
                best[list(cols)] = w
    return best


def choose_weights(p: np.ndarray, y: np.ndarray, ann: np.ndarray) -> tuple:
    """Blend weights of the columns of ``p`` (members' out-of-fold predictions
    of ratings ``y`` by annotators ``ann``): non-negative least squares on
    standardised, per-annotator centred predictions (``nnls_bic``), then the
    least-squares scale of the blend. Returns (weights, mean per-annotator
    pairwise accuracy of the blend on these ratings)."""
    pc, yc = centred(p, ann), centred(np.asarray(y, np.float64), ann)
    sd = pc.std(axis=0)
    flat = sd <= 1e-12  # a constant ranks nothing: never weighted
    sd[flat] = 1.0
    direction = np.zeros(p.shape[1])
    live = np.flatnonzero(~flat)
    if live.size:
        direction[live] = nnls_bic(pc[:, live] / sd[live], yc)
    blend = (p / sd) @ direction
    s = max(float(blend @ y), 0.0) / max(float(blend @ blend), 1e-12)
    w = direction / sd * s
    return w, _accuracy(p @ w, y, ann)


def single_weights(p: np.ndarray, y: np.ndarray, ann: np.ndarray) -> tuple:
    """The best single member (mean per-annotator pairwise accuracy; first of
    equals, ``MEMBERS`` order) as weights with its least-squares scale."""
    acc = PairScorer(ann, y).of_matrix(p).mean(axis=0)
    j = int(np.argmax(np.where(np.isnan(acc), -1.0, acc)))
    s = max(float(p[:, j] @ y), 0.0) / max(float(p[:, j] @ p[:, j]), 1e-12)
    w = np.zeros(p.shape[1])
    w[j] = s if s > 0 else 1.0
    return w, float(acc[j])


def _accuracy(pred: np.ndarray, y: np.ndarray, ann: np.ndarray) -> float:
    return float(PairScorer(ann, y).of_matrix(pred[:, None]).mean())


def blend_heads(weights, model, pop, ridge, consensus) -> np.ndarray:
    """Per-annotator blended heads (A, d) from the members' heads (model
    and ridge per annotator, population and consensus shared)."""
    w = np.asarray(weights, np.float64)
    ridge = np.asarray(ridge, np.float64).copy()
    ridge[:, -2] = 0.0  # the ridge sees content only
    return (
        w[0] * np.asarray(model, np.float64)
        + w[1] * np.asarray(pop, np.float64)[None, :]
        + w[2] * ridge
        + w[3] * np.asarray(consensus, np.float64)[None, :]
    )


def member_columns(f, ann, model, pop, ridge, consensus) -> np.ndarray:
    """Each member's prediction of ratings with features ``f`` (n, d) by
    annotators ``ann``: (n, 4) in ``MEMBERS`` order."""
    x, crowd = f[:, :-2], f[:, -2]
    ridge = np.asarray(ridge, np.float64).copy()
    ridge[:, -2] = 0.0
    return np.stack(
        [
            forward(x, crowd, np.asarray(model, np.float64), ann),
            forward(x, crowd, np.asarray(pop, np.float64)),
            forward(x, crowd, ridge, ann),
            forward(x, crowd, np.asarray(consensus, np.float64)),
        ],
        axis=1,
    )


def nested_gain(p, y, ann, fold_of_row) -> dict:
    """The blend against the best single member, each chosen on one fold and
    scored on the other fold's annotators (both ways): the paired
    per-annotator difference, its mean and standard error."""
    diffs = []
    for held in (fold_of_row, ~fold_of_row):
        if not held.any() or held.all():
            continue
        tr = ~held
        w_blend, _ = choose_weights(p[tr], y[tr], ann[tr])
        w_single, _ = single_weights(p[tr], y[tr], ann[tr])
        acc = PairScorer(ann[held], y[held]).of_matrix(
            np.stack([p[held] @ w_blend, p[held] @ w_single], 1)
        )
        diffs.append(acc[:, 0] - acc[:, 1])
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    if d.size < 2:
        return {"gain": math.nan, "se": math.nan, "keep_blend": False}
    gain, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
    return {"gain": gain, "se": se, "keep_blend": gain > PREFER_BLEND_Z * se}


def blend_out_of_fold(search, *, pop, ridge, consensus) -> tuple[tuple, dict]:
    """Weights of (model, population, ridge, consensus) on val_seen, out of
    fold: each fold's model predictions come from the configuration chosen on
    the other fold (``search``: selection's val_seen search, with its folds,
    its per-fold choice and the heads of any configuration); the blend, or the
    best single member where the blend does not beat it out of fold
    (``nested_gain``). Also the out-of-fold mean pairwise accuracy of each
    member and of what was kept."""
    v, sc = search.vs, search.sc
    cols, ys, anns, folds = [], [], [], []
    for held in (search.fold, ~search.fold):
        if not held.any() or held.all():
            continue
        model = search.heads_of(search._pick(~held))
        idx = np.flatnonzero(np.isin(v.r.ann, sc.annotators[held]))
        ann = v.r.ann[idx]
        cols.append(member_columns(v.f[idx], ann, model, pop, ridge, consensus))
        ys.append(v.y[idx])
        anns.append(ann)
        folds.append(np.full(idx.size, held is search.fold))
    if not cols:
        return (1.0, 0.0, 0.0, 0.0), {"weights": None, "why": "no val_seen folds"}
    p, y, ann = np.vstack(cols), np.concatenate(ys), np.concatenate(anns)
    check = nested_gain(p, y, ann, np.concatenate(folds))
    keep = check["keep_blend"] and np.unique(ann).size >= MIN_BLEND_ANNOTATORS
    w = choose_weights(p, y, ann)[0] if keep else np.zeros(p.shape[1])
    if not w.any():  # the best member alone (or nothing the blend could use)
        keep, w = False, single_weights(p, y, ann)[0]
    oof = {m: mean_pairwise(ann, y, p[:, j]) for j, m in enumerate(MEMBERS)}
    oof["blend"] = mean_pairwise(ann, y, p @ w)
    info = {
        "weights": dict(zip(MEMBERS, w.tolist(), strict=True)),
        "oof": oof,
        "nested": check,
        "kept": "blend" if keep else "best member",
    }
    return tuple(float(x) for x in w), info
