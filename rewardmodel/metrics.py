"""Per-annotator evaluation metrics: plain numpy, no torch, no Django.

Pairwise accuracy counts only pairs the annotator rated differently (ties in the
truth are dropped); a tie in the prediction scores half, so a constant predictor
(the annotator's mean) scores exactly 0.5.
"""

from __future__ import annotations

import math

import numpy as np


def pairwise_accuracy(y_true, y_pred) -> float | None:
    """Share of pairs with different true scores that the prediction orders the
    same way (prediction ties count 0.5). None when no such pair exists."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred differ in shape")
    if t.size < 2:
        return None
    # Every pair appears twice (i, j and j, i) in numerator and denominator
    # alike, so the full matrices give the same ratio without a triangle mask.
    dt = np.sign(t[:, None] - t[None, :])
    dp = np.sign(p[:, None] - p[None, :])
    valid = dt != 0
    n = int(np.count_nonzero(valid))
    if n == 0:
        return None
    agree = np.count_nonzero((dt == dp) & valid)
    tied = np.count_nonzero((dp == 0) & valid)
    return float((agree + 0.5 * tied) / n)


def rankdata(x) -> np.ndarray:
    """Ranks starting at 1; tied values get the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    if not x.size:
        return ranks
    sorted_x = x[order]
    # Runs of equal values in sorted order (NaN equals nothing: a run of its
    # own), each given the mean (i + j) / 2 + 1 of its first and last place.
    new = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    first = np.flatnonzero(new)
    last = np.concatenate([first[1:], [x.size]]) - 1
    run = np.cumsum(new) - 1
    ranks[order] = (first[run] + last[run]) / 2.0 + 1.0
    return ranks


def pearson(x, y) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return None
    xc = x - x.mean()
    yc = y - y.mean()
    denom = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    if denom == 0.0:
        return None
    return float((xc * yc).sum() / denom)


def spearman(x, y) -> float | None:
    """Pearson correlation of the tie-averaged ranks."""
    return pearson(rankdata(x), rankdata(y))


def mae(y_true, y_pred) -> float | None:
    t = np.asarray(y_true, dtype=np.float64)
    if t.size == 0:
        return None
    return float(np.abs(t - np.asarray(y_pred, dtype=np.float64)).mean())


def all_metrics(y_true, y_pred) -> dict:
    return {
        "pairwise_accuracy": pairwise_accuracy(y_true, y_pred),
        "spearman": spearman(y_true, y_pred),
        "pearson": pearson(y_true, y_pred),
        "mae": mae(y_true, y_pred),
    }


def mean_of(values) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def by_annotator(ann: np.ndarray):
    """(annotator, indices of their entries) for every annotator in ``ann``, in
    order; indices in their original order."""
    order = np.argsort(ann, kind="stable")
    a_sorted = ann[order]
    bounds = np.flatnonzero(np.diff(a_sorted)) + 1
    for idx in np.split(order, bounds):
        if idx.size:
            yield int(ann[idx[0]]), idx


def per_annotator_pairwise(
    ann: np.ndarray, y: np.ndarray, pred: np.ndarray
) -> dict[int, float]:
    """Pairwise accuracy per annotator (those with no untied pair left out)."""
    out = {}
    for a, idx in by_annotator(ann):
        acc = pairwise_accuracy(y[idx], pred[idx])
        if acc is not None:
            out[a] = acc
    return out


def mean_pairwise(ann: np.ndarray, y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over annotators of their pairwise accuracy (annotators with no
    untied pair are left out)."""
    accs = list(per_annotator_pairwise(ann, y, pred).values())
    return float(np.mean(accs)) if accs else float("nan")


class PairScorer:
    """Per-annotator pairwise accuracy (``pairwise_accuracy``'s rule) of many
    predictions of the same ratings at once: the true orderings are set up
    once, then every candidate costs one small array operation per annotator."""

    def __init__(self, ann: np.ndarray, y: np.ndarray):
        self.groups = []
        for a, idx in by_annotator(ann):
            t = np.asarray(y[idx], np.float64)
            dt = np.sign(t[:, None] - t[None, :])
            valid = dt != 0
            n = int(np.count_nonzero(valid))
            if n and idx.size >= 2:
                self.groups.append((a, idx, dt[:, :, None], valid[:, :, None], n))
        self.annotators = np.asarray([g[0] for g in self.groups], np.int64)

    def accuracies(self, pred_of, width: int) -> np.ndarray:
        """(annotators, ``width`` candidates): ``pred_of(annotator, idx)`` returns
        the candidates' predictions of that annotator's ratings, (n_a, width)."""
        rows = []
        for a, idx, dt, valid, n in self.groups:
            p = np.asarray(pred_of(a, idx), np.float64)
            dp = np.sign(p[:, None, :] - p[None, :, :])
            agree = np.count_nonzero((dp == dt) & valid, axis=(0, 1))
            tied = np.count_nonzero((dp == 0) & valid, axis=(0, 1))
            rows.append((agree + 0.5 * tied) / n)
        return np.asarray(rows, np.float64).reshape(len(self.groups), width)

    def of_matrix(self, pred: np.ndarray) -> np.ndarray:
        """Accuracies of candidate predictions given as columns, (n, C)."""
        return self.accuracies(lambda a, idx: pred[idx], pred.shape[1])


BOOTSTRAP_RESAMPLES = 1000
# Below this many images a bootstrap only replays the few errors there are: no
# interval rather than a misleading one.
BOOTSTRAP_MIN_IMAGES = 5


def mae_bootstrap(y, pred, *, seed, resamples: int = BOOTSTRAP_RESAMPLES):
    """95% percentile-bootstrap interval of the MAE, resampling the images (the
    absolute errors are skewed and n is small, where a normal interval would be
    too narrow on the high side). Seeded: the same run gives the same interval.
    None under ``BOOTSTRAP_MIN_IMAGES`` images."""
    err = np.abs(np.asarray(y, dtype=np.float64) - np.asarray(pred, dtype=np.float64))
    n = err.size
    if n < BOOTSTRAP_MIN_IMAGES:
        return None
    rng = np.random.default_rng([int(x) for x in seed])
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory for annotators with many images
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = err[rng.integers(0, n, size=(stop - start, n))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]
