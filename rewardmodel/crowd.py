"""The collaborative feature: what other people said of an image (numpy only).

``Crowd.feature`` is the leave-one-out crowd feature of ``taste`` (the one
definition: fitting, evaluation, comparison and serving all build a ``Crowd``
and ask it), ``crowd_fill_fit`` / ``crowd_expected`` what it is expected to be
for an image nobody else rated. Shape letters as in ``taste``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from . import lowrank as LR
from .metrics import by_annotator
from .similar import (
    NO_PAIRS,
    Agreement,
    TrainIndex,
    constants,
    pair_sums,
    term_of,
    weighted_mean,
)

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
    lets its denominator approach 0. ``stacking`` uses it as the fifth member.
    No (A, A) or (A, images) array: the constants from sparse pairs, the
    weights read one annotator at a time, by the code serving uses
    (``rewardmodel.similar``). ``lowrank`` (training config ``similar`` as a
    list; ``taste_benchmark.py --paired lowrank``): ``lowrank.PairPrior``
    shrinks each pair toward a prior of its own from low-rank taste factors
    instead of toward m."""

    agreement: Agreement
    train: TrainIndex  # the fit ratings, by image and by annotator
    n_ann: int
    info: dict = field(default_factory=dict)

    @classmethod
    def fit(
        cls, r: Ratings, z: np.ndarray, n_ann: int, n_rows: int, lowrank=None
    ) -> Similar:
        """From fit ratings ``r`` with normalised scores ``z`` only;
        ``lowrank`` (rank, λ): shrink toward ``lowrank.PairPrior``."""
        train = TrainIndex(r.ann, r.row, z, n_rows)
        sums = pair_sums(r.ann, r.row, z, n_ann, n_rows)
        if sums is None:
            return cls(NO_PAIRS, train, n_ann, {"pairs": 0, "why": "no co-rated pairs"})
        keys, n, prod, prod2 = sums
        c = constants(n, prod, prod2)
        k, tot = int(n.size), float(n.sum())
        if lowrank:  # (rank, λ, cross-fitted, everyone, capped): lowrank.py
            rank, lam, cross, everyone, cap = (*lowrank, 0, 0, 0)[:5]
            if cross:  # calibrated across image halves
                c = LR.cross_fitted(c, r.ann, r.row, z, n_ann, n_rows, rank, lam, cap)
            else:
                u, g = LR.factors(r.ann, r.row, z, n_ann, n_rows, rank, lam)
                c = LR.pair_prior(c, keys, n, prod, u, g, n_ann, cap=bool(cap))
            if everyone:  # the prior for non-co-raters too
                c = replace(c, everyone=True)
            post = c.pair_posterior(keys // n_ann, keys % n_ann, n, prod)
            info = {"pairs": k, "c0": round(c.c0, 5), "c1": round(c.c1, 5)}
            info["tau2"] = round(float(max(c.tau2, 0.0)), 6)
            info["floored"] = round(float((post < 0).mean()), 4)
            return cls(c, train, n_ann, info)
        info = {
            "pairs": k,
            "mean_co_rated": round(tot / k, 3),
            "m": round(c.m, 5),
            "sigma2": round(c.sigma2, 5),
            "tau2": round(float(max(c.tau2, 0.0)), 6),
            "floored": round(float((c.posterior(n, prod) < 0).mean()), 4),
        }
        return cls(c, train, n_ann, info)

    @property
    def weights(self) -> np.ndarray:
        """The (A, A) weights, zero diagonal (for tests and small studies:
        prediction reads one annotator's row at a time)."""
        if getattr(self.agreement, "everyone", False):
            return np.stack(
                [
                    LR.weight_row(a, self.train, self.agreement)
                    for a in range(self.n_ann)
                ]
            )
        w = np.full((self.n_ann, self.n_ann), self.agreement.base)
        for a in range(self.n_ann):
            who, wa = self.train.agreements(a, self.agreement)
            w[a, who] = wa
        np.fill_diagonal(w, 0.0)
        return w

    def predict(self, crowd: Crowd, r: Ratings) -> np.ndarray:
        """The similarity-weighted mean of the others' normalised ratings (those
        ``crowd`` holds: the visible ratings, each annotator's own left out) of
        each rating's image, for its annotator; the plain leave-one-out mean
        where no one with a positive weight rated it; 0 where nobody else did.
        One annotator at a time (``similar.term_of``, as serving)."""
        out = np.zeros(len(r))
        if getattr(self.agreement, "everyone", False):  # lowrank.py, all pairs
            every = LR.flat(crowd)
            for a, idx in by_annotator(r.ann):
                w = LR.weight_row(a, self.train, self.agreement)
                sums = LR.weighted_sums_all(crowd, every, w)
                out[idx] = weighted_mean(crowd, a, r.row[idx], sums)
            return out
        for a, idx in by_annotator(r.ann):
            out[idx] = term_of(crowd, a, r.row[idx], self.train, self.agreement)
        return out


def similar_of(ctx) -> Similar:
    """The ``Similar`` of an ``evaluation.Context``: agreements from its fit
    ratings alone (train), normalised as every fitted annotator is."""
    fit = ctx.fit
    z = (fit.score - ctx.mean[fit.ann]) / ctx.std[fit.ann]  # taste.normalised
    low = ctx.data.similar if isinstance(ctx.data.similar, tuple) else None
    return Similar.fit(fit, z, ctx.data.n_ann, ctx.x.shape[0], low)


def similar_part(hyper, ctx, r: Ratings):
    """The fifth member's share of the model's prediction of ratings ``r``
    (``Hyper.blend_similar`` × ``Similar.predict`` on ``ctx``'s crowd); 0
    where selection did not use it (``Data.similar`` off)."""
    if hyper.blend_similar is None:
        return 0.0
    sim = similar_of(ctx).predict(ctx.crowd, r)
    return np.asarray(hyper.blend_similar, np.float64)[r.ann] * sim
