"""The personalised reward model, in closed form (numpy only, no torch).

For annotator *a* and image *i*, in the annotator's normalised units:

    s(a, i) = f(i) · (w0 + δ_a)        f(i) = [x_i standardised, crowd_i^(-a), 1]

* ``w0`` — the **population head**: one ridge regression over every training
  rating (all annotators pooled);
* ``δ_a`` — the annotator's **own head**, the posterior mean under the prior
  δ_a ~ N(0, τ² D) (D weights the embedding, crowd and intercept columns by 1, ρ
  and 1): ridge regression of the annotator's residuals *shrunk toward the
  population head*, solved in its dual form (one eigendecomposition of an
  n_a × n_a kernel per annotator, so every τ on the grid costs one product);
* ``crowd_i^(-a)`` — the other raters' normalised ratings of the same image,
  summed and divided by (their count + 1) (so one rating counts for little, and
  "nobody rated it yet" is 0). It is the collaborative part: where other people
  rated an image, their agreement is evidence, and each annotator's head learns
  how far they follow the crowd. Never the annotator's own rating.
* for an image nobody else rated (a freshly generated one), the crowd feature is
  *unknown*, not 0: it is replaced by its expected value given the content,
  ``crowd_fill · [x, 1]`` (a ridge regression of the crowd feature on the
  embedding over the fit ratings). With 0 the shared part of taste, which the
  crowd column absorbs where it is known, would be missing from every new
  image's prediction and only the heads' small content residual would rank them.

Hyper-parameters (population ridge, τ, ρ, and one τ per k for annotators the model
has only k ratings of) are chosen on the validation splits only, from fixed grids;
``select`` never sees test ratings. ``fit_heads`` then refits on whatever ratings it
is given (the deployed version: everything).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .metrics import pairwise_accuracy

# Relative grids (scaled by the data): fixed here, not per benchmark variant.
POP_GRID = tuple(10.0 ** np.arange(-3.0, 2.01, 0.5))  # × mean diagonal of F'F
TAU_GRID = (0.0,) + tuple(10.0 ** np.arange(-2.5, 1.01, 0.5))  # × 1/mean diag K
RHO_GRID = (0.0, 10.0)  # crowd column's prior weight relative to one embedding dim
MAX_DIM = 256  # principal components of the embedding kept (cost ∝ this)
MIN_STD = 0.25  # an annotator who always gives one score must not blow up targets
STD_PRIOR_WEIGHT = 5.0  # ratings' worth of the global std behind a k-shot std


@dataclass
class Ratings:
    """Ratings as parallel arrays: embedding row, annotator index, raw score."""

    row: np.ndarray
    ann: np.ndarray
    score: np.ndarray

    def take(self, mask: np.ndarray) -> Ratings:
        return Ratings(self.row[mask], self.ann[mask], self.score[mask])

    def __len__(self) -> int:
        return int(self.score.size)


def concat(*parts: Ratings) -> Ratings:
    return Ratings(
        np.concatenate([p.row for p in parts]),
        np.concatenate([p.ann for p in parts]),
        np.concatenate([p.score for p in parts]),
    )


def norm_stats(r: Ratings, n_ann: int, *, fallback_std: float = 1.0):
    """Per-annotator mean and std of their ratings (std floored, shrunk toward
    ``fallback_std`` when an annotator has few ratings)."""
    cnt = np.bincount(r.ann, minlength=n_ann).astype(np.float64)
    tot = np.bincount(r.ann, weights=r.score, minlength=n_ann)
    sq = np.bincount(r.ann, weights=r.score**2, minlength=n_ann)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, tot / cnt, 0.0)
        var = np.where(cnt > 0, sq / cnt - mean**2, 0.0)
    var = np.maximum(var, 0.0)
    w = STD_PRIOR_WEIGHT
    std = np.sqrt((cnt * var + w * fallback_std**2) / (cnt + w))
    return mean, np.maximum(std, MIN_STD)


def normalised(r: Ratings, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (r.score - mean[r.ann]) / std[r.ann]


@dataclass
class Crowd:
    """Per image: sum and count of normalised ratings by everyone visible."""

    sums: np.ndarray
    counts: np.ndarray

    @classmethod
    def build(cls, r: Ratings, z: np.ndarray, n_rows: int) -> Crowd:
        return cls(
            np.bincount(r.row, weights=z, minlength=n_rows),
            np.bincount(r.row, minlength=n_rows).astype(np.float64),
        )

    def loo(self, rows: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
        """The crowd feature of ``rows``; ``own`` (NaN where the annotator did not
        rate it among the visible ratings) is taken out first."""
        s, c = self.sums[rows].copy(), self.counts[rows].copy()
        if own is not None:
            has = ~np.isnan(own)
            s[has] -= own[has]
            c[has] -= 1
        return s / (c + 1.0)


@dataclass
class Features:
    """Image features: the embedding standardised per column and projected on its
    top ``MAX_DIM`` principal components (all of them when the embedding is
    smaller), plus the crowd and intercept columns.

    Built from the embeddings alone (every image of the snapshot, no rating), so
    selection, report and the deployed refit share one feature space."""

    mean: np.ndarray
    std: np.ndarray
    proj: np.ndarray  # (dim, k)

    @classmethod
    def build(cls, emb: np.ndarray) -> Features:
        mean, std = emb.mean(0), emb.std(0) + 1e-3
        z = ((emb - mean) / std).astype(np.float32)
        if emb.shape[1] <= MAX_DIM:
            return cls(mean, std, np.eye(emb.shape[1], dtype=np.float32))
        evals, evecs = np.linalg.eigh((z.T @ z).astype(np.float64) / len(z))
        top = evecs[:, ::-1][:, :MAX_DIM]
        return cls(mean, std, top.astype(np.float32))

    def x(self, emb: np.ndarray) -> np.ndarray:
        z = ((emb - self.mean) / self.std).astype(np.float32)
        return z @ self.proj

    @staticmethod
    def full(x: np.ndarray, crowd: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        return np.hstack(
            [x, crowd.reshape(n, 1).astype(np.float32), np.ones((n, 1), np.float32)]
        )


def ridge_solve(
    f: np.ndarray, y: np.ndarray, lam: float, *, free_tail: int = 2
) -> np.ndarray:
    """Ridge with the last ``free_tail`` columns (crowd, intercept) barely
    penalised."""
    return ridge_path(f, y, [lam], free_tail=free_tail)[0]


def ridge_path(f: np.ndarray, y: np.ndarray, lams, *, free_tail: int = 2) -> list:
    gram = (f.T @ f).astype(np.float64)  # float32 product: no float64 copy of f
    rhs = (f.T @ np.asarray(y, dtype=np.float32)).astype(np.float64)
    out = []
    for lam in lams:
        pen = np.full(f.shape[1], lam)
        pen[-free_tail:] = 1e-6 * max(lam, 1.0)
        out.append(np.linalg.solve(gram + np.diag(pen), rhs))
    return out


def mean_pairwise(ann: np.ndarray, y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over annotators of their pairwise accuracy (annotators with no
    untied pair are left out)."""
    accs = []
    order = np.argsort(ann, kind="stable")
    ann_s, y_s, p_s = ann[order], y[order], pred[order]
    bounds = np.flatnonzero(np.diff(ann_s)) + 1
    for yy, pp in zip(np.split(y_s, bounds), np.split(p_s, bounds), strict=True):
        acc = pairwise_accuracy(yy, pp)
        if acc is not None:
            accs.append(acc)
    return float(np.mean(accs)) if accs else float("nan")


# --- per-annotator heads in the dual ------------------------------------------


@dataclass
class UserKernel:
    """One annotator's fit ratings, decomposed once for a given ρ."""

    f: np.ndarray  # (n_a, d+2) features of their fit ratings
    resid: np.ndarray  # normalised target minus the population head
    evals: np.ndarray
    evecs: np.ndarray
    proj: np.ndarray  # evecs' @ resid


@dataclass
class Prior:
    """Prior covariance of an annotator's deviation δ_a from the population head:
    ``iso · diag(diag) + L Lᵀ``. The diagonal part treats every embedding column
    alike (crowd column weighted by ρ); the low-rank part ``L`` holds the taste
    directions people actually differ along, estimated from everyone's heads
    (the hierarchical part: a newcomer's few ratings only have to place them
    within those directions)."""

    diag: np.ndarray
    lowrank: np.ndarray | None = None  # (d+2, r)
    iso: float = 1.0

    def kernel(self, f: np.ndarray) -> np.ndarray:
        k = self.iso * ((f * self.diag) @ f.T)
        if self.lowrank is not None:
            g = f @ self.lowrank
            k = k + g @ g.T
        return k

    def primal(self, f: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """D Fᵀ α."""
        ft_a = f.T.astype(np.float64) @ alpha
        out = self.iso * self.diag * ft_a
        if self.lowrank is not None:
            out = out + self.lowrank @ (self.lowrank.T @ ft_a)
        return out

    def mean_diag(self, f: np.ndarray) -> float:
        d = self.iso * ((f * f) @ self.diag)
        if self.lowrank is not None:
            d = d + np.einsum("ij,ij->i", g := f @ self.lowrank, g)
        return float(np.mean(d))


def prior_diag(dim: int, rho: float) -> Prior:
    d = np.ones(dim + 2, dtype=np.float32)
    d[-2] = rho
    return Prior(d)


def prior_with_directions(
    base: Prior, deltas: np.ndarray, *, gamma: float, rank: int = 24
) -> Prior:
    """``base`` mixed with the top ``rank`` directions of the annotators' head
    deviations ``deltas`` (n × (d+2)); ``gamma`` is the low-rank share of the
    prior's trace."""
    if gamma <= 0 or deltas.shape[0] < 4 or not np.any(deltas):
        return base
    _, sv, vt = np.linalg.svd(deltas, full_matrices=False)
    r = min(rank, deltas.shape[0] // 2, sv.size)
    lr = vt[:r].T * sv[:r]  # (d+2, r)
    scale = gamma * float(np.sum(base.diag)) / max(float(np.sum(lr**2)), 1e-12)
    return Prior(base.diag, (lr * np.sqrt(scale)).astype(np.float32), 1.0 - gamma)


def user_kernel(f: np.ndarray, resid: np.ndarray, prior: Prior) -> UserKernel:
    evals, evecs = np.linalg.eigh(prior.kernel(f).astype(np.float32))
    evals = np.maximum(evals, 0.0)
    return UserKernel(f, resid, evals, evecs, evecs.T @ resid.astype(np.float32))


def user_delta(uk: UserKernel, tau2: float, prior: Prior) -> np.ndarray:
    """Primal δ_a = τ² D Fᵀ (τ² K + I)⁻¹ r."""
    if tau2 <= 0 or uk.resid.size == 0:
        return np.zeros(uk.f.shape[1])
    alpha = uk.evecs @ (uk.proj / (tau2 * uk.evals + 1.0))
    return tau2 * prior.primal(uk.f, alpha.astype(np.float64))


def kernel_scale(f: np.ndarray, prior: Prior) -> float:
    """1 / mean diagonal of the kernel: puts τ on a scale-free grid."""
    if f.size == 0:
        return 1.0
    step = max(1, f.shape[0] // 4000)  # a scale: a fixed subsample is plenty
    return 1.0 / max(prior.mean_diag(f[::step]), 1e-6)


# --- the model -------------------------------------------------------------------


@dataclass
class Hyper:
    pop_lambda: float
    tau: float  # relative, for annotators with their own fit ratings
    rho: float
    tau_k: dict[int, float] = field(default_factory=dict)  # few-shot newcomers
    gamma: float = 0.0  # low-rank (shared taste directions) share of the prior
    tau_iso: float | None = None  # τ of the isotropic pass the directions come from

    def tau_for(self, n: int) -> float:
        """τ for an annotator with ``n`` ratings: the one chosen for the largest
        k ≤ n (and the seen τ once n passes the largest k)."""
        ks = sorted(self.tau_k)
        if not ks or n > ks[-1]:
            return self.tau
        best = 0.0
        for k in ks:
            if k <= n:
                best = self.tau_k[k]
        return best

    def as_dict(self) -> dict:
        return {
            "pop_lambda": self.pop_lambda,
            "tau": self.tau,
            "rho": self.rho,
            "tau_k": {str(k): v for k, v in self.tau_k.items()},
            "gamma": self.gamma,
            "tau_iso": self.tau_iso,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Hyper:
        return cls(
            pop_lambda=float(d["pop_lambda"]),
            tau=float(d["tau"]),
            rho=float(d["rho"]),
            tau_k={int(k): float(v) for k, v in d.get("tau_k", {}).items()},
            gamma=float(d.get("gamma", 0.0)),
            tau_iso=None if d.get("tau_iso") is None else float(d["tau_iso"]),
        )


@dataclass
class Model:
    """A fitted model: feature standardisation, population head, the heads of the
    annotators it was fitted on (already w0 + δ_a), their normalisation."""

    feat: Features
    w0: np.ndarray
    heads: np.ndarray  # (n_ann, d+2) float32; rows of unfitted annotators = w0
    fitted: np.ndarray  # bool per annotator
    norm_mean: np.ndarray
    norm_std: np.ndarray
    hyper: Hyper
    kscale: float  # the kernel scale τ is relative to
    global_std: float
    prior: Prior | None = None
    # (d+1,): E[crowd feature | x] = [x, 1] · crowd_fill, for images nobody
    # else rated; None (older checkpoints): 0, as before.
    crowd_fill: np.ndarray | None = None

    def crowd_expected(self, x: np.ndarray) -> np.ndarray:
        """The expected crowd feature of images with content ``x`` (standardised
        rows), for images no one else has rated."""
        if self.crowd_fill is None:
            return np.zeros(x.shape[0])
        return x @ self.crowd_fill[:-1] + self.crowd_fill[-1]

    def adapt(
        self, f: np.ndarray, y_raw: np.ndarray, *, tau: float | None = None
    ) -> tuple[np.ndarray, float, float]:
        """(head, mean, std) for an annotator from their ratings alone (features
        ``f``), shrunk toward the population head by the τ chosen for their k."""
        n = y_raw.size
        if n == 0:
            return self.w0.astype(np.float32), float("nan"), self.global_std
        r = Ratings(np.zeros(n, np.int64), np.zeros(n, np.int64), y_raw)
        m, s = norm_stats(r, 1, fallback_std=self.global_std)
        y = (y_raw - m[0]) / s[0]
        prior = self.prior or prior_diag(self.w0.size - 2, self.hyper.rho)
        uk = user_kernel(f, y - f @ self.w0, prior)
        tau2 = (self.hyper.tau_for(n) if tau is None else tau) * self.kscale
        head = self.w0 + user_delta(uk, tau2, prior)
        return head.astype(np.float32), float(m[0]), float(s[0])


def fit_heads(
    *,
    emb: np.ndarray,
    fit: Ratings,
    n_ann: int,
    hyper: Hyper,
    pop_extra: tuple[np.ndarray, np.ndarray] | None = None,
    prior: Prior | None = None,
    feat: Features | None = None,
) -> Model:
    """Fit the population head and every annotator's head on ``fit``, with given
    hyper-parameters (no selection). ``prior`` (with its taste directions), when
    given, is used as it is; else the directions come from a first isotropic
    pass over ``fit``."""
    feat = feat or Features.build(emb)
    mean, std = norm_stats(fit, n_ann)
    global_std = float(np.median(std[np.bincount(fit.ann, minlength=n_ann) > 1]))
    y = normalised(fit, mean, std)
    crowd = Crowd.build(fit, y, emb.shape[0])
    x = feat.x(emb)
    f = Features.full(x[fit.row], crowd.loo(fit.row, y))
    gram_scale = float(np.mean(np.sum(f[:, :-2] ** 2, axis=0)))
    w0 = _pop_fit(f, y, hyper.pop_lambda * gram_scale, pop_extra, x)
    fill = crowd_fill_fit(x, fit.row, f[:, -2])
    resid = y - f @ w0
    if prior is None:
        prior = _prior_from_fit(f, resid, fit, n_ann, hyper, x.shape[1])
    deltas, kscale = heads_fit(f, resid, fit.ann, n_ann, prior, hyper.tau)
    heads = (w0[None, :] + deltas).astype(np.float32)
    fitted = np.bincount(fit.ann, minlength=n_ann) > 0
    return Model(
        feat, w0, heads, fitted, mean, std, hyper, kscale, global_std, prior, fill
    )


def crowd_fill_fit(x: np.ndarray, rows: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """What the crowd would say of an image from its content alone: ridge of the
    crowd feature on [x, 1], one row per rated image (the mean of its ratings'
    crowd feature), λ from ``POP_GRID`` by closed-form leave-one-image-out error
    (the fit ratings only; a crowd mean is far less noisy than one rating, so it
    gets its own λ rather than the population head's)."""
    cnt = np.bincount(rows, minlength=x.shape[0])
    keep = cnt > 0
    t = np.bincount(rows, weights=crowd, minlength=x.shape[0])[keep] / cnt[keep]
    f = np.hstack([x[keep], np.ones((int(keep.sum()), 1))]).astype(np.float64)
    gram, rhs = f.T @ f, f.T @ t
    scale = float(np.mean(np.diag(gram)[:-1])) if f.shape[1] > 1 else 1.0
    best = (np.inf, np.zeros(f.shape[1]))
    for lam in POP_GRID:
        pen = np.full(f.shape[1], lam * scale)
        pen[-1] = 1e-6 * max(lam * scale, 1.0)
        inv = np.linalg.inv(gram + np.diag(pen))
        w = inv @ rhs
        hat = np.einsum("ij,jk,ik->i", f, inv, f)
        err = float(np.mean(((t - f @ w) / np.maximum(1.0 - hat, 1e-6)) ** 2))
        if err < best[0]:
            best = (err, w)
    return best[1]


def _prior_from_fit(f, resid, fit, n_ann, hyper, dim) -> Prior:
    prior = prior_diag(dim, hyper.rho)
    if hyper.gamma > 0:  # taste directions from a first, isotropic pass
        tau_iso = hyper.tau if hyper.tau_iso is None else hyper.tau_iso
        iso, _ = heads_fit(f, resid, fit.ann, n_ann, prior, tau_iso)
        fitted = np.bincount(fit.ann, minlength=n_ann) > 0
        prior = prior_with_directions(prior, iso[fitted], gamma=hyper.gamma)
    return prior


def heads_fit(f, resid, ann, n_ann, prior: Prior, tau: float):
    """Every annotator's δ (zeros for those without ratings) and the kernel scale
    τ was relative to."""
    kscale = kernel_scale(f, prior)
    deltas = np.zeros((n_ann, f.shape[1]))
    for a, idx in _by_annotator(ann):
        uk = user_kernel(f[idx], resid[idx], prior)
        deltas[a] = user_delta(uk, tau * kscale, prior)
    return deltas, kscale


def _pop_fit(f, y, lam, pop_extra, x) -> np.ndarray:
    """Population ridge; ``pop_extra`` = (rows, normalised scores) of external
    population data, rows into ``x`` (crowd feature 0: nobody rated them here)."""
    if pop_extra is not None and pop_extra[0].size:
        rows, ey = pop_extra
        fe = Features.full(x[rows], np.zeros(rows.size, np.float32))
        f = np.vstack([f, fe])
        y = np.concatenate([y, ey])
    return ridge_solve(f, y, lam)


def _by_annotator(ann: np.ndarray):
    order = np.argsort(ann, kind="stable")
    a_sorted = ann[order]
    bounds = np.flatnonzero(np.diff(a_sorted)) + 1
    for idx in np.split(order, bounds):
        if idx.size:
            yield int(ann[idx[0]]), idx
