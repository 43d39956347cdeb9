"""Stacking the family's members instead of keeping one (issue 26).

Hard selection on ~60 validation annotators picked the wrong member often
enough to cost 1.4 points on average. Instead the deployed head of every fitted
annotator is a non-negative blend of four members, each linear in the same
features [x, crowd, 1], so the blend is itself one head per annotator:

    h_a = w_model · model_a + w_population · pop + w_ridge · ridge_a
          + w_consensus · consensus

(``model``: the grid configuration chosen on val_seen; ``population``: the
content ridge at the population baseline's λ; ``ridge``: the per-annotator ridge
on content, crowd weight 0; ``consensus``: the crowd column and intercept, the
leave-one-out consensus's form). The weights (``choose_weights``) are the point
of a 0.1-step simplex with the best mean per-annotator pairwise accuracy on the
val_seen ratings, averaged over bootstrap resamples of the annotators, scaled by
least squares, from the members' predictions **out of fold**: the val_seen
annotators are split in two seeded folds, and each fold's predictions come from
the configuration chosen on the *other* fold, so the grid's optimism on the data
that chose it does not buy the model member weight. A member that adds nothing
gets weight 0; where one member is best the blend is close to it, and where
they err differently it beats each. Only train and validation ratings are read.
"""

from __future__ import annotations

from itertools import combinations_with_replacement

import numpy as np

from .metrics import PairScorer, mean_pairwise
from .taste import forward

MEMBERS = ("model", "population", "ridge", "consensus")


GRID_STEP = 0.1  # the simplex of member weights, on standardised predictions
BAGS, BAG_SEED = 50, 26  # bootstrap resamples of annotators behind the choice


def simplex(k: int, step: float = GRID_STEP) -> np.ndarray:
    """Every weight vector of ``k`` non-negative multiples of ``step`` summing
    to 1 (286 for four members at 0.1), single members first."""
    n = round(1 / step)
    out = [
        np.bincount(np.asarray(c, np.int64), minlength=k) / n
        for c in combinations_with_replacement(range(k), n)
    ]
    return np.asarray(sorted(out, key=lambda w: (-w.max(), tuple(-w))))


def choose_weights(p: np.ndarray, y: np.ndarray, ann: np.ndarray) -> tuple:
    """Blend weights of the columns of ``p`` (members' out-of-fold predictions of
    ratings ``y`` by annotators ``ann``): the direction on the simplex (of
    standardised columns) with the best mean per-annotator pairwise accuracy,
    ties to the smaller squared error, then the least-squares scale (so the
    blend is on the ratings' scale for MAE), the direction averaged over
    ``BAGS`` bootstrap resamples of the annotators (bagging: a single maximum is
    noisy). Returns (weights, accuracy of the blend on these ratings)."""
    sd = p.std(axis=0)
    flat = sd <= 1e-12  # a constant ranks nothing: never weighted
    sd[flat] = 1.0
    z = p / sd
    grid = simplex(p.shape[1])
    grid = grid[~grid[:, flat].any(axis=1)] if flat.any() else grid
    pred = z @ grid.T
    per_ann = PairScorer(ann, y).of_matrix(pred)  # (annotators, candidates)
    scale = np.maximum((pred * y[:, None]).sum(0), 0.0) / np.maximum(
        (pred**2).sum(0), 1e-12
    )
    sse = ((pred * scale - y[:, None]) ** 2).sum(0)
    # Bagged over annotators: the best point of each resample, averaged. One
    # maximum over ~100 annotators jumps between far-apart corners of the
    # simplex on noise (a seed of issue 26's benchmark lost 0.035 that way).
    rng = np.random.default_rng(BAG_SEED)
    n = per_ann.shape[0]
    picks = []
    for _ in range(BAGS):
        acc_b = per_ann[rng.integers(0, n, size=n)].mean(axis=0)
        picks.append(int(np.lexsort((sse, -np.round(acc_b, 12)))[0]))
    direction = grid[picks].mean(axis=0)
    blend = z @ direction
    s = max(float(blend @ y), 0.0) / max(float(blend @ blend), 1e-12)
    w = direction / sd * s
    return w, float(PairScorer(ann, y).of_matrix((p @ w)[:, None]).mean())


def blend_heads(weights, model, pop, ridge, consensus) -> np.ndarray:
    """Per-annotator blended heads (n_ann, d) from the members' heads (model
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
    """Each member's prediction of ratings with features ``f`` by annotators
    ``ann``: (n, 4) in ``MEMBERS`` order."""
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


def blend_out_of_fold(search, *, pop, ridge, consensus) -> tuple[tuple, dict]:
    """Weights of (model, population, ridge, consensus) on val_seen, out of
    fold: each fold's model predictions come from the configuration chosen on
    the other fold (``search``: evaluation's val_seen search, with its folds,
    its per-fold choice and the heads of any configuration). Also the
    out-of-fold mean pairwise accuracy of each member and of the blend."""
    v, sc = search.vs, search.sc
    cols, ys, anns = [], [], []
    for held in (search.fold, ~search.fold):
        if not held.any() or held.all():
            continue
        model = search.heads_of(search._pick(~held))
        idx = np.flatnonzero(np.isin(v.r.ann, sc.annotators[held]))
        ann = v.r.ann[idx]
        cols.append(member_columns(v.f[idx], ann, model, pop, ridge, consensus))
        ys.append(v.y[idx])
        anns.append(ann)
    if not cols:
        return (1.0, 0.0, 0.0, 0.0), {"weights": None, "why": "no val_seen folds"}
    p, y, ann = np.vstack(cols), np.concatenate(ys), np.concatenate(anns)
    w, _ = choose_weights(p, y, ann)
    if not w.any():
        w = np.asarray([1.0, 0.0, 0.0, 0.0])
    oof = {m: mean_pairwise(ann, y, p[:, j]) for j, m in enumerate(MEMBERS)}
    oof["blend"] = mean_pairwise(ann, y, p @ w)
    info = {"weights": dict(zip(MEMBERS, w.tolist(), strict=True)), "oof": oof}
    return tuple(float(x) for x in w), info
