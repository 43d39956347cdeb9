"""The collaborative feature: what other people said of an image (numpy only).

``Crowd.feature`` is the leave-one-out crowd feature of ``taste`` (the one
definition: fitting, evaluation, comparison and serving all build a ``Crowd``
and ask it), ``crowd_fill_fit`` / ``crowd_expected`` what it is expected to be
for an image nobody else rated. Shape letters as in ``taste``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .metrics import by_annotator
from .similar import constants

if TYPE_CHECKING:
    from .taste import Ratings


@dataclass
class Crowd:
    """Per image row: sum and count of the normalised ratings of everyone
    visible, and each annotator's own (rows, normalised scores), so that their
    rating is left out of their own crowd feature. The one crowd of fitting,
    evaluation, comparison and serving."""

    sums: np.ndarray
    counts: np.ndarray
    own: dict = field(default_factory=dict)  # annotator key -> (rows, z)

    @classmethod
    def build(cls, r: Ratings, z: np.ndarray, n_rows: int, *, keys=None) -> Crowd:
        """``keys``: the key of each annotator index of ``r`` (default the index)."""
        own = {
            (a if keys is None else keys[a]): (r.row[idx], z[idx])
            for a, idx in by_annotator(r.ann)
        }
        return cls(
            np.bincount(r.row, weights=z, minlength=n_rows),
            np.bincount(r.row, minlength=n_rows).astype(np.float64),
            own,
        )

    def own_scores(self, key, rows: np.ndarray) -> np.ndarray:
        """The annotator's own normalised rating of each image row of ``rows``
        (NaN where they have none among the visible ratings)."""
        out = np.full(rows.size, np.nan)
        mine = self.own.get(key)
        if mine is not None and mine[0].size:
            # By search in their own rows, not through an array over every
            # image row (annotators × images of work over a whole view); a row
            # they rated twice gives its last rating, as indexing did.
            order = np.argsort(mine[0], kind="stable")
            theirs = mine[0][order]
            j = np.searchsorted(theirs, rows, side="right") - 1
            hit = j >= 0
            hit[hit] = theirs[j[hit]] == rows[hit]
            out[hit] = mine[1][order[j[hit]]]
        return out

    def _others(self, rows: np.ndarray, own: np.ndarray | None):
        s, c = self.sums[rows].copy(), self.counts[rows].copy()
        if own is not None:
            has = ~np.isnan(own)
            s[has] -= own[has]
            c[has] -= 1
        return s, c

    def feature(
        self,
        rows: np.ndarray,
        own: np.ndarray | None = None,
        *,
        fill: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """The leave-one-out crowd feature of image rows ``rows``: the others'
        ratings summed over (their count + 1), ``own`` (the annotator's own
        normalised rating per row, NaN where none) taken out first. Where nobody
        else rated the image: ``fill(rows there)`` (the expected crowd), or 0
        without a fill (while fitting, before the fill exists)."""
        s, c = self._others(rows, own)
        out = s / (c + 1.0)
        alone = c <= 0
        if fill is not None and alone.any():
            out[alone] = fill(rows[alone])
        return out

    def of_annotator(self, key, rows: np.ndarray, *, fill=None) -> np.ndarray:
        """The crowd feature of ``rows`` as annotator ``key`` sees it."""
        return self.feature(rows, self.own_scores(key, rows), fill=fill)

    def of_ratings(self, r: Ratings, *, fill=None) -> np.ndarray:
        """The crowd feature of each rating (its annotator's own left out)."""
        return self.feature(r.row, self._own_of(r), fill=fill)

    def others_mean(self, r: Ratings) -> np.ndarray:
        """The leave-one-out consensus baseline: the plain mean of the others'
        normalised ratings of each rated image (0 where nobody else rated it)."""
        s, c = self._others(r.row, self._own_of(r))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / c, 0.0)

    def _own_of(self, r: Ratings) -> np.ndarray:
        own = np.full(len(r), np.nan)
        for a, idx in by_annotator(r.ann):
            own[idx] = self.own_scores(a, r.row[idx])
        return own


def crowd_expected(fill: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """[x, 1] · fill (0 without a fill: checkpoints from before it existed)."""
    if fill is None:
        return np.zeros(x.shape[0])
    return x @ fill[:-1] + fill[-1]


def crowd_fill_fit(
    x: np.ndarray, rows: np.ndarray, crowd: np.ndarray, *, lambdas
) -> np.ndarray:
    """What the crowd would say of an image from its content alone (k + 1,):
    ridge of the crowd feature on [x, 1], one row per rated image (the mean of
    its ratings' crowd feature), λ from ``lambdas`` (the population grid) by closed-form
    leave-one-image-out error (the fit ratings only; a crowd mean is far less
    noisy than one rating, so it gets its own λ rather than the population
    head's)."""
    cnt = np.bincount(rows, minlength=x.shape[0])
    keep = cnt > 0
    t = np.bincount(rows, weights=crowd, minlength=x.shape[0])[keep] / cnt[keep]
    f = np.hstack([x[keep], np.ones((int(keep.sum()), 1))]).astype(np.float64)
    gram, rhs = f.T @ f, f.T @ t
    scale = float(np.mean(np.diag(gram)[:-1])) if f.shape[1] > 1 else 1.0
    best = (np.inf, np.zeros(f.shape[1]))
    for lam in lambdas:
        pen = np.full(f.shape[1], lam * scale)
        pen[-1] = 1e-6 * max(lam * scale, 1.0)
        inv = np.linalg.inv(gram + np.diag(pen))
        w = inv @ rhs
        hat = np.sum((f @ inv) * f, axis=1)  # leverage of each image
        err = float(np.mean(((t - f @ w) / np.maximum(1.0 - hat, 1e-6)) ** 2))
        if err < best[0]:
            best = (err, w)
    return best[1]


# --- a crowd that resembles the person (issue 26) ----------------------------------


@dataclass
class Similar:
    """User–user collaborative filtering: for annotator a and image i, the
    others' normalised ratings of i weighted by how much each of them agreed
    with a on the images both rated **in the fit (train) ratings** — never the
    ratings being predicted, so the similarity of a and b cannot carry a's
    held-out rating.

    Agreement of a and b: the mean product of their normalised ratings over
    their co-rated fit images, shrunk empirical-Bayes style toward the mean
    agreement of all pairs (the plain consensus's equal weights): with n_ab
    co-ratings the raw mean has sampling variance σ²/n_ab, the pairs' true
    agreements spread τ² around the pooled mean m (both by moments over every
    pair), and the weight is m + n_ab τ² / (n_ab τ² + σ²) · (raw − m). Pairs who
    never co-rated get m; τ² ≤ 0 (no spread beyond noise) gives everyone m,
    i.e. the plain mean. Negative posterior agreement is floored at 0: with
    the handful of co-ratings a pair has here (~5), a negative estimate is more
    often noise than opposed taste, and a negative weight in a normalised mean
    lets its denominator approach 0. ``stacking`` uses it as an optional fifth
    member; serving computes the same weights one annotator at a time
    (``rewardmodel.similar``: no (A, A) array there)."""

    weights: np.ndarray  # (A, A), zero diagonal, ≥ 0
    info: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, r: Ratings, z: np.ndarray, n_ann: int, n_rows: int) -> Similar:
        """From fit ratings ``r`` with normalised scores ``z`` only."""
        zsum, cnt = _dense(r.ann, r.row, z, n_ann, n_rows)
        zbar = np.divide(zsum, cnt, out=np.zeros_like(zsum), where=cnt > 0)
        has = (cnt > 0).astype(np.float64)
        prod = zbar @ zbar.T  # Σ over co-rated images of z_a z_b
        prod2 = (zbar**2) @ (zbar**2).T
        n = has @ has.T
        off = ~np.eye(n_ann, dtype=bool)
        pair = off & (n > 0)
        if not pair.any():
            w = np.zeros((n_ann, n_ann))
            return cls(w, {"pairs": 0, "why": "no co-rated pairs"})
        c = constants(n[pair], prod[pair], prod2[pair])
        post = np.full((n_ann, n_ann), c.m)
        post[pair] = c.posterior(n[pair], prod[pair])
        w = np.where(off, np.maximum(post, 0.0), 0.0)
        k, tot = int(pair.sum()), float(n[pair].sum())
        info = {
            "pairs": k,
            "mean_co_rated": round(tot / k, 3),
            "m": round(c.m, 5),
            "sigma2": round(c.sigma2, 5),
            "tau2": round(float(max(c.tau2, 0.0)), 6),
            "floored": round(float((post[pair] < 0).mean()), 4),
        }
        return cls(w, info)

    def predict(self, crowd: Crowd, r: Ratings) -> np.ndarray:
        """The similarity-weighted mean of the others' normalised ratings (those
        ``crowd`` holds: the visible ratings, each annotator's own left out by
        the zero diagonal) of each rating's image, for its annotator; the plain
        leave-one-out mean where no one with a positive weight rated it; 0
        where nobody else did."""
        n_ann, n_rows = self.weights.shape[0], crowd.sums.size
        rows, anns, zs = [], [], []
        for a, (rr, zz) in crowd.own.items():
            rows.append(rr)
            anns.append(np.full(rr.size, int(a)))
            zs.append(zz)
        if not rows:
            return np.zeros(len(r))
        zsum, cnt = _dense(
            np.concatenate(anns),
            np.concatenate(rows),
            np.concatenate(zs),
            n_ann,
            n_rows,
        )
        num = (self.weights[r.ann] * zsum[:, r.row].T).sum(axis=1)
        den = (self.weights[r.ann] * cnt[:, r.row].T).sum(axis=1)
        plain = crowd.others_mean(r)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 1e-12, num / den, plain)


def similar_of(ctx) -> Similar:
    """The ``Similar`` of an ``evaluation.Context``: agreements from its fit
    ratings alone (train), normalised as every fitted annotator is."""
    fit = ctx.fit
    z = (fit.score - ctx.mean[fit.ann]) / ctx.std[fit.ann]  # taste.normalised
    return Similar.fit(fit, z, ctx.data.n_ann, ctx.x.shape[0])


def similar_part(hyper, ctx, r: Ratings):
    """The fifth member's share of the model's prediction of ratings ``r``
    (``Hyper.blend_similar`` × ``Similar.predict`` on ``ctx``'s crowd); 0
    where selection did not use it (always, outside evaluation)."""
    if hyper.blend_similar is None:
        return 0.0
    sim = similar_of(ctx).predict(ctx.crowd, r)
    return np.asarray(hyper.blend_similar, np.float64)[r.ann] * sim


def _dense(ann, rows, z, n_ann: int, n_rows: int):
    """(sum, count) of normalised ratings per (annotator, image row)."""
    zsum = np.zeros((n_ann, n_rows))
    cnt = np.zeros((n_ann, n_rows))
    np.add.at(zsum, (ann, rows), z)
    np.add.at(cnt, (ann, rows), 1.0)
    return zsum, cnt
