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
val_seen ratings, scaled by least squares, from the members' predictions **out
of fold**: the val_seen
annotators are split in two seeded folds, and each fold's predictions come from
the configuration chosen on the *other* fold, so the grid's optimism on the data
that chose it does not buy the model member weight. A member that adds nothing
gets weight 0; where one member is best the blend is close to it, and where
they err differently it beats each. Only train and validation ratings are read.
"""

from __future__ import annotations

from itertools import combinations, combinations_with_replacement

import numpy as np

MEMBERS = ("model", "population", "ridge", "consensus")


def nnls_small(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a few columns, exactly: the best of the
    unconstrained solutions on every subset of columns that are all ≥ 0
    (deterministic; no solver tolerance)."""
    k = p.shape[1]
    gram, rhs = p.T @ p, p.T @ y
    best, best_w = float(y @ y), np.zeros(k)
    for size in range(1, k + 1):
        for cols in combinations(range(k), size):
            c = list(cols)
            g = gram[np.ix_(c, c)] + 1e-9 * np.eye(size) * max(np.trace(gram), 1.0)
            try:
                w = np.linalg.solve(g, rhs[c])
            except np.linalg.LinAlgError:
                continue
            if np.any(w < 0):
                continue
            sse = float(y @ y - 2 * w @ rhs[c] + w @ gram[np.ix_(c, c)] @ w)
            if sse < best - 1e-12:
                best, best_w = sse, np.zeros(k)
                best_w[c] = w
    return best_w


GRID_STEP = 0.1  # the simplex of member weights, on standardised predictions


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
    blend is on the ratings' scale for MAE). Returns (weights, accuracy)."""
    from .taste import PairScorer

    sd = p.std(axis=0)
    sd[sd <= 1e-12] = 1.0
    z = p / sd
    grid = simplex(p.shape[1])
    pred = z @ grid.T
    acc = PairScorer(ann, y).of_matrix(pred).mean(axis=0)
    scale = np.maximum((pred * y[:, None]).sum(0), 0.0) / np.maximum(
        (pred**2).sum(0), 1e-12
    )
    sse = ((pred * scale - y[:, None]) ** 2).sum(0)
    best = int(np.lexsort((sse, -np.round(acc, 12)))[0])
    return grid[best] / sd * scale[best], float(acc[best])


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
    r = np.asarray(ridge, np.float64)[ann].copy()
    r[:, -2] = 0.0
    return np.stack(
        [
            np.einsum("ij,ij->i", f, np.asarray(model, np.float64)[ann]),
            f @ np.asarray(pop, np.float64),
            np.einsum("ij,ij->i", f, r),
            f @ np.asarray(consensus, np.float64),
        ],
        axis=1,
    )
