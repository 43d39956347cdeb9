"""The similarity-weighted crowd (``crowd.Similar``, issue 26) without an
annotators × annotators matrix: what training stores and serving computes.

``crowd.Similar`` (evaluation) holds every pair's agreement in a dense (A, A)
array; at 10,000 annotators that is 800 MB. The deployed model keeps only the
three shrinkage constants (``Agreement``: the pooled mean agreement m, the
sampling variance σ² of one co-rating's product, the spread τ² of the pairs'
true agreements), fitted by ``agreement_fit`` on the ratings the model was
fitted on, and serving (``TrainIndex``) computes one annotator's agreements
when asked: their train ratings × the co-raters of those images, a sparse
product. Both sides shrink with ``shrunk``, so the served agreements are the
evaluated ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """The shrinkage constants of ``crowd.Similar`` (see its docstring)."""

    m: float
    sigma2: float
    tau2: float  # ≤ 0: no spread beyond noise, everyone gets m (the plain mean)

    def as_array(self) -> np.ndarray:
        return np.asarray([self.m, self.sigma2, self.tau2], np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray | None) -> Agreement | None:
        """None for an empty or absent array (checkpoints without the member)."""
        if a is None or not a.size:
            return None
        if a.shape != (3,):
            raise ValueError(f"similar constants: shape {a.shape}, need (3,).")
        return cls(float(a[0]), float(a[1]), float(a[2]))

    @property
    def base(self) -> float:
        """The weight of a pair who never co-rated (m, floored at 0)."""
        return max(self.m, 0.0)

    def posterior(self, n: np.ndarray, prod: np.ndarray) -> np.ndarray:
        """Posterior agreement of pairs with ``n`` co-ratings whose products
        sum to ``prod`` (before the floor)."""
        if self.tau2 <= 0:
            return np.full(n.shape, self.m)
        raw = prod / n
        return self.m + n * self.tau2 / (n * self.tau2 + self.sigma2) * (raw - self.m)

    def shrunk(self, n: np.ndarray, prod: np.ndarray) -> np.ndarray:
        """Their weight: the posterior agreement floored at 0."""
        return np.maximum(self.posterior(n, prod), 0.0)

    def keyed(self, key_index: dict) -> Agreement:
        """The same for other annotator keys (``lowrank.PairPrior`` maps them)."""
        return self

    def weights_of(self, ann: int, who, n: np.ndarray, prod: np.ndarray):
        """Annotator ``ann``'s weights of co-raters ``who`` (the same for
        every pair here; ``lowrank.PairPrior`` reads the pair)."""
        return self.shrunk(n, prod)


NO_PAIRS = Agreement(0.0, 1.0, 0.0)


def constants(n: np.ndarray, prod: np.ndarray, prod2: np.ndarray) -> Agreement:
    """The constants by moments over the co-rating pairs (n > 0, a ≠ b), given
    per pair the count of co-rated images and the sums of z_a z_b and of
    (z_a z_b)²: one-way random effects with unequal group sizes."""
    tot = float(n.sum())
    m = float(prod.sum() / tot)
    sigma2 = max(float(prod2.sum() / tot) - m * m, 1e-12)
    raw = prod / n
    ss = float((n * (raw - m) ** 2).sum())
    denom = tot - float((n**2).sum()) / tot
    tau2 = (ss - (n.size - 1) * sigma2) / denom if denom > 0 else 0.0
    return Agreement(m, sigma2, tau2)


def mean_per_cell(ann, row, z, n_rows: int):
    """(annotator, row, mean z) per rated (annotator, image row) cell: a
    repeated rating counts once, at its mean (as ``crowd.Similar`` reads it)."""
    cell = np.asarray(ann, np.int64) * n_rows + np.asarray(row, np.int64)
    uniq, inv = np.unique(cell, return_inverse=True)
    zbar = np.bincount(inv, weights=z) / np.bincount(inv)
    return uniq // n_rows, uniq % n_rows, zbar


# Pairs enumerated per chunk of images at most this many (Σ raters² per chunk).
PAIR_CHUNK = 2_000_000


def pair_sums(ann, row, z, n_ann: int, n_rows: int):
    """(pair keys a · n_ann + b, co-rated images n, Σ z_a z_b, Σ (z_a z_b)²) of
    every ordered pair a ≠ b who co-rated an image in these ratings (a repeated
    rating at its mean), None without any. Enumerated per image in chunks
    (memory ~ the pairs, never an (A, A) or (A, images) array)."""
    a, r, zb = mean_per_cell(ann, row, z, n_rows)
    order = np.argsort(r, kind="stable")
    a, r, zb = a[order], r[order], zb[order]
    ptr = np.searchsorted(r, np.arange(n_rows + 1))
    size = np.diff(ptr)
    cost = np.cumsum(size.astype(np.int64) ** 2)
    parts, lo = [], 0
    while lo < n_rows:
        before = int(cost[lo - 1]) if lo else 0
        hi = max(int(np.searchsorted(cost, before + PAIR_CHUNK, "right")), lo + 1)
        take = np.arange(ptr[lo], ptr[min(hi, n_rows)])
        # Every ordered pair (i, j) of ratings of one image, i ≠ j.
        first = np.repeat(take, size[r[take]])
        second = ptr[r[first]] + _ranks(size[r[take]])
        keep = first != second
        i, j = first[keep], second[keep]
        if i.size:
            parts.append(_summed(a[i] * n_ann + a[j], zb[i] * zb[j]))
        lo = hi
    if not parts:
        return None
    key = np.concatenate([q[0] for q in parts])
    uniq, inv = np.unique(key, return_inverse=True)
    return (
        uniq,
        *(np.bincount(inv, np.concatenate([q[c] for q in parts])) for c in (1, 2, 3)),
    )


def _summed(key, p) -> tuple:
    uniq, inv = np.unique(key, return_inverse=True)
    n = np.bincount(inv).astype(np.float64)
    return uniq, n, np.bincount(inv, weights=p), np.bincount(inv, weights=p * p)


def agreement_fit(ann, row, z, n_ann: int, n_rows: int) -> Agreement:
    """``Agreement`` from fit ratings (normalised scores ``z``); where no two
    annotators co-rated an image, every weight 0 (``crowd.Similar``: the plain
    leave-one-out mean)."""
    sums = pair_sums(ann, row, z, n_ann, n_rows)
    return NO_PAIRS if sums is None else constants(*sums[1:])


def _ranks(sizes: np.ndarray) -> np.ndarray:
    """0..s-1 for each s in ``sizes``, concatenated."""
    if not sizes.size:
        return np.zeros(0, np.int64)
    starts = np.cumsum(sizes) - sizes
    return np.arange(int(sizes.sum())) - np.repeat(starts, sizes)


class TrainIndex:
    """The ratings a version was fitted on, normalised as it normalised them,
    by image (who rated it) and by annotator (what they rated): enough to read
    one annotator's agreements (``agreements``) without the (A, A) array."""

    def __init__(self, ann: np.ndarray, row: np.ndarray, z: np.ndarray, n_rows: int):
        a, r, zb = mean_per_cell(ann, row, z, max(n_rows, 1))
        by_row = np.argsort(r, kind="stable")
        self.row_ann, self.row_z = a[by_row], zb[by_row]
        self.ptr = np.searchsorted(r[by_row], np.arange(n_rows + 1))
        who, start = np.unique(a, return_index=True)  # a is sorted (by cell)
        ends = [*start[1:], a.size]
        self.mine = {
            int(k): (r[s:e], zb[s:e])
            for k, s, e in zip(who.tolist(), start.tolist(), ends, strict=True)
        }

    def agreements(self, ann: int, agreement: Agreement) -> tuple:
        """(co-raters, their posterior agreement with ``ann``): everyone who
        co-rated an image with them in the fit ratings; anyone else gets
        ``agreement.base``."""
        mine = self.mine.get(int(ann))
        if mine is None:
            return np.zeros(0, np.int64), np.zeros(0)
        rows, za = mine
        size = self.ptr[rows + 1] - self.ptr[rows]
        at = np.repeat(self.ptr[rows], size) + _ranks(size)
        b, p = self.row_ann[at], np.repeat(za, size) * self.row_z[at]
        keep = b != ann
        who, inv = np.unique(b[keep], return_inverse=True)
        n = np.bincount(inv).astype(np.float64)
        prod = np.bincount(inv, weights=p[keep])
        return who, agreement.weights_of(ann, who, n, prod)


def weighted_sums(crowd, key, who, weights, base: float) -> tuple:
    """(numerator, denominator) per image row of ``crowd`` (``crowd.Crowd``,
    own ratings keyed as ``key``) of the similarity-weighted mean of the
    others' normalised ratings: weight ``weights`` for annotators ``who`` (keys
    of ``crowd.own``), ``base`` for anyone else, 0 for ``key`` itself
    (``crowd.Similar.predict`` without the (A, A) array: base × everyone,
    corrected for those weighted otherwise)."""
    n = crowd.sums.size
    delta = dict(zip(who.tolist(), (weights - base).tolist(), strict=True))
    delta[key] = -base
    at, zs, ds = [], [], []
    for k, d in delta.items():
        own = crowd.own.get(k)
        if own is not None and d != 0.0 and own[0].size:
            at.append(own[0])
            zs.append(own[1])
            ds.append(np.full(own[0].size, d))
    num, den = base * crowd.sums, base * crowd.counts
    if at:
        at, d = np.concatenate(at), np.concatenate(ds)
        num = num + np.bincount(at, weights=d * np.concatenate(zs), minlength=n)
        den = den + np.bincount(at, weights=d, minlength=n)
    return num, den


def weighted_mean(crowd, key, rows, sums: tuple) -> np.ndarray:
    """The mean at image rows ``rows`` from ``weighted_sums``; the plain
    leave-one-out mean where the weights sum to 0, 0 where nobody else rated."""
    num, den = sums[0][rows], sums[1][rows]
    ok = den > 1e-12
    out = np.zeros(rows.size)
    out[ok] = num[ok] / den[ok]
    if not ok.all():  # the plain mean only where needed (a per-call search)
        few = rows[~ok]
        s, c = crowd._others(few, crowd.own_scores(key, few))
        out[~ok] = np.where(c > 0, s / np.where(c > 0, c, 1.0), 0.0)
    return out


def term_of(crowd, key, rows: np.ndarray, train: TrainIndex, agreement) -> np.ndarray:
    """Annotator ``key``'s similarity-weighted crowd at image rows ``rows``
    from their agreements in ``train`` (what ``Served.term`` keeps per
    annotator; evaluation and promotion read it once)."""
    who, w = train.agreements(key, agreement)
    sums = weighted_sums(crowd, key, who, w, agreement.base)
    return weighted_mean(crowd, key, rows, sums)


def agreement_for(hyper, fit, y, n_ann: int, n_rows: int) -> Agreement | None:
    """What the deployed model keeps of the member (``taste.fit_heads``): the
    constants on its fit ratings ``fit`` (normalised ``y``), where selection
    gave the member weights (``Hyper.blend_similar``); else None."""
    if hyper.blend_similar is None:
        return None
    return agreement_fit(fit.ann, fit.row, y, n_ann, n_rows)


@dataclass
class Served:
    """The member as one web process serves it (``inference.Predictor``): per
    annotator, the weighted sums over the crowd they were computed on, from
    their agreements (``fit_ratings(key)``: their fit ratings and those of
    everyone who rated the same images, one query), both read again when the
    crowd is rebuilt (every ``inference.CROWD_TTL``, so a rating that stopped
    counting, e.g. an erased person's, leaves within it); at most ``keep``
    annotators kept."""

    agreement: Agreement
    sums: dict = field(default_factory=dict)  # key -> (crowd, weighted sums)
    keep: int = 64

    def term(self, crowd, key: int, rows: np.ndarray, fit_ratings) -> np.ndarray:
        """The similarity-weighted crowd of image rows ``rows`` for annotator
        ``key`` (normalised units; the weight is the caller's)."""
        hit = self.sums.pop(key, None)
        if hit is None or hit[0] is not crowd:
            who, w = fit_ratings(key).agreements(key, self.agreement)
            hit = (crowd, weighted_sums(crowd, key, who, w, self.agreement.base))
        self.sums[key] = hit  # the most recently used last
        while len(self.sums) > self.keep:
            self.sums.pop(next(iter(self.sums)))
        return weighted_mean(crowd, key, rows, hit[1])


def train_index(data: list, model, index: dict) -> TrainIndex:
    """``TrainIndex`` of (image id, annotator pk, score) rows: the ratings the
    version was fitted on, normalised with its own per-annotator statistics
    (those of an annotator it did not fit, if any, are left out)."""
    keep = [
        (d[0], d[1], d[2], i)
        for d in data
        if (i := index.get(str(d[1]))) is not None and model.fitted[i]
    ]
    if not keep:
        return TrainIndex(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), 0)
    img, pk, score, at = (np.asarray(c) for c in zip(*keep, strict=True))
    ids, row = np.unique(img, return_inverse=True)
    z = (score.astype(np.float64) - model.norm_mean[at]) / model.norm_std[at]
    return TrainIndex(pk.astype(np.int64), row, z, ids.size)
