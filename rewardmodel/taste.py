"""The personalised reward model, in closed form (numpy only, no torch).

For annotator *a* and image *i*, in the annotator's normalised units:

    s(a, i) = f(i) · (w0 + δ_a)        f(i) = [x_i standardised, crowd_i^(-a), 1]

* ``w0`` — the **base head**, one of a nested family (``BASES``) chosen on
  validation: the content-only population ridge (the population baseline's own
  form), the population ridge with the crowd column, the crowd column alone, or
  zero (the per-annotator ridge's form);
* ``δ_a`` — the annotator's **own head**, the posterior mean under the prior
  δ_a ~ N(0, τ² D) (D weights the embedding, crowd and intercept columns by 1, ρ
  and 1, plus shared taste directions): ridge regression of the annotator's
  residuals *shrunk toward the base head*, solved in its dual form (one
  eigendecomposition of an n_a × n_a kernel per annotator, so every τ and every
  base on the grid costs one product);
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

Every simple baseline is a member of this family (population: content base,
τ = 0; leave-one-out consensus: crowd-only base, τ = 0; per-annotator ridge: zero
base, ρ = 0), so selection on validation chooses among them too.

**Newcomers** (annotators a version was not fitted on) get the empirical-Bayes
posterior from their k ratings: the same prior (τ, ρ, directions) as the fitted
annotators, around a **newcomer base** chosen for k = 0 on validation. The
posterior weight of their own ratings grows with k by itself; at k = 0 the
prediction *is* the newcomer base.

Hyper-parameters come from fixed grids on the validation splits only; ``select``
never sees test ratings. ``fit_heads`` then refits on whatever ratings it is
given (the deployed version: everything).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .metrics import pairwise_accuracy

# Relative grids (scaled by the data): fixed here, not per benchmark variant.
POP_GRID = tuple(10.0 ** np.arange(-3.0, 2.01, 0.5))  # × mean diagonal of F'F
TAU_GRID = (0.0,) + tuple(10.0 ** np.arange(-2.5, 1.01, 0.5))  # × 1/mean diag K
RHO_GRID = (0.0, 10.0)  # crowd column's prior weight relative to one embedding dim
# Base heads (see the module docstring): "content" = population ridge without the
# crowd column, "crowd" = with it, "crowd_only" = crowd and intercept (no content),
# "zero" = none (heads shrink toward zero).
BASES = ("content", "crowd", "crowd_only", "zero")
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


def base_head(gram: np.ndarray, rhs: np.ndarray, kind: str, lam: float) -> np.ndarray:
    """A base head of kind ``kind`` (``BASES``) from the Gram matrix and right-hand
    side of [x, crowd, 1] features: ridge on the kept columns, ``lam`` relative to
    the mean energy of the content columns; crowd and intercept barely
    penalised. Every caller (model, population baseline, deployed refit) goes
    through here, so equal choices give bit-identical heads."""
    d = gram.shape[0]
    w = np.zeros(d)
    if kind == "zero":
        return w
    keep = np.ones(d, bool)
    if kind == "content":
        keep[-2] = False
    elif kind == "crowd_only":
        keep[:-2] = False
    elif kind != "crowd":
        raise ValueError(f"unknown base {kind!r}; one of {BASES}")
    scale = float(np.mean(np.diag(gram)[:-2])) if d > 2 else 1.0
    pen = np.full(d, lam * scale)
    pen[-2:] = 1e-6 * max(lam * scale, 1.0)
    idx = np.flatnonzero(keep)
    sub = gram[np.ix_(idx, idx)] + np.diag(pen[idx])
    w[idx] = np.linalg.solve(sub, rhs[idx])
    return w


def gram_of(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F'F and F'y in float64 (float32 products: no float64 copy of f)."""
    gram = (f.T @ f).astype(np.float64)
    rhs = (f.T @ np.asarray(y, dtype=np.float32)).astype(np.float64)
    return gram, rhs


def per_annotator_pairwise(
    ann: np.ndarray, y: np.ndarray, pred: np.ndarray
) -> dict[int, float]:
    """Pairwise accuracy per annotator (those with no untied pair left out)."""
    out = {}
    for a, idx in _by_annotator(ann):
        acc = pairwise_accuracy(y[idx], pred[idx])
        if acc is not None:
            out[a] = acc
    return out


def mean_pairwise(ann: np.ndarray, y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over annotators of their pairwise accuracy (annotators with no
    untied pair are left out)."""
    accs = list(per_annotator_pairwise(ann, y, pred).values())
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
        return self.cross(f, f)

    def primal(self, f: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """D Fᵀ α (α one vector, or one column per solution)."""
        ft_a = f.T.astype(np.float64) @ alpha
        diag = self.diag if alpha.ndim == 1 else self.diag[:, None]
        out = self.iso * diag * ft_a
        if self.lowrank is not None:
            out = out + self.lowrank @ (self.lowrank.T @ ft_a)
        return out

    def cross(self, f: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Prior covariance between the rows of ``f`` and of ``g``: F D Gᵀ."""
        k = self.iso * ((f * self.diag) @ g.T)
        if self.lowrank is not None:
            k = k + (f @ self.lowrank) @ (g @ self.lowrank).T
        return k

    def row_diag(self, f: np.ndarray) -> np.ndarray:
        """The kernel's diagonal, fᵀ D f per row, without the n × n kernel."""
        d = self.iso * ((f * f) @ self.diag)
        if self.lowrank is not None:
            d = d + np.einsum("ij,ij->i", g := f @ self.lowrank, g)
        return d

    def mean_diag(self, f: np.ndarray) -> float:
        return float(np.mean(self.row_diag(f)))


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


@dataclass
class HeadSpread:
    """How unsure the model is of one annotator's own taste on given images: the
    posterior standard deviation of f · δ_a, in the annotator's normalised units.

    δ_a's posterior mean is the head (``user_delta``); its posterior covariance
    under the same prior and unit noise is τ²D − τ²D Fᵀ (τ²K + I)⁻¹ F D τ², so for
    images G the variance is τ² diag(G D Gᵀ) − τ⁴ kᵀ (τ²K + I)⁻¹ k with k = F D Gᵀ.
    Small where the annotator rated images like these, large where their ratings
    say little (steering uses it to discount candidates the model is guessing
    about). The base head, fitted on everyone's ratings, is taken as known."""

    f: np.ndarray  # (n_a, d+2) features of the annotator's fit ratings
    evals: np.ndarray
    evecs: np.ndarray
    tau2: float
    prior: Prior

    @classmethod
    def build(cls, f: np.ndarray, tau2: float, prior: Prior) -> HeadSpread:
        """No personal part (τ = 0) needs no decomposition: the spread is 0."""
        f = np.asarray(f, np.float64)
        if f.shape[0] and tau2 > 0:
            evals, evecs = np.linalg.eigh(prior.kernel(f).astype(np.float64))
        else:
            f, evals, evecs = f[:0], np.zeros(0), np.zeros((0, 0))
        return cls(f, np.maximum(evals, 0.0), evecs, float(tau2), prior)

    def sd(self, g: np.ndarray) -> np.ndarray:
        g = np.asarray(g, np.float64)
        var = self.tau2 * self.prior.row_diag(g)
        if self.f.shape[0]:
            proj = self.evecs.T @ self.prior.cross(self.f, g)  # (n_a, m)
            shrink = self.tau2**2 / (self.tau2 * self.evals + 1.0)
            var = var - np.einsum("i,ij->j", shrink, proj**2)
        return np.sqrt(np.maximum(var, 0.0))


def heads_grid(
    f: np.ndarray,
    y: np.ndarray,
    ann: np.ndarray,
    n_ann: int,
    prior: Prior,
    bases: list[np.ndarray],
    taus: list[float],
    eig_cache: dict | None = None,
) -> tuple[np.ndarray, float]:
    """Every annotator's head for every (base, τ): (len(bases), len(taus), n_ann,
    d) and the kernel scale τ is relative to. One eigendecomposition per
    annotator serves the whole grid; annotators without ratings keep the base.
    ``eig_cache`` (annotator → (eigenvalues, eigenvectors)) carries the
    decompositions between calls with the same features and prior."""
    kscale = kernel_scale(f, prior)
    nb, nt, d = len(bases), len(taus), f.shape[1]
    b = np.stack(bases).astype(np.float64)  # (B, d)
    out = np.broadcast_to(b[:, None, None, :], (nb, nt, n_ann, d)).copy()
    resid = (np.asarray(y, np.float64)[:, None] - f.astype(np.float64) @ b.T).astype(
        np.float32
    )  # (n, B)
    t2 = np.asarray(taus, np.float64) * kscale
    live = t2 > 0
    if not live.any():
        return out, kscale
    for a, idx in _by_annotator(ann):
        cached = None if eig_cache is None else eig_cache.get(a)
        if cached is None:
            uk = user_kernel(f[idx], resid[idx], prior)  # proj: (n_a, B)
            evals, evecs, proj = uk.evals, uk.evecs, uk.proj
            if eig_cache is not None:
                eig_cache[a] = (evals, evecs)
        else:
            evals, evecs = cached
            proj = evecs.T @ resid[idx]
        # α for every (base, τ) at once: evecs (proj / (τ² λ + 1))
        shrink = 1.0 / (t2[live][None, :] * evals[:, None] + 1.0)  # (n_a, T')
        scaled = proj[:, :, None] * shrink[:, None, :]  # (n_a, B, T')
        alpha = evecs.astype(np.float64) @ scaled.reshape(len(idx), -1)
        delta = prior.primal(f[idx], alpha).reshape(d, nb, -1) * t2[live]
        out[:, live, a, :] += np.transpose(delta, (1, 2, 0))
    return out, kscale


def prior_key(prior: Prior) -> str:
    """A fingerprint of a prior (which eigendecompositions may be reused)."""
    h = hashlib.sha1(np.ascontiguousarray(prior.diag).tobytes())
    if prior.lowrank is not None:
        h.update(np.ascontiguousarray(prior.lowrank).tobytes())
    h.update(f"{prior.iso!r}".encode())
    return h.hexdigest()


class PairScorer:
    """Per-annotator pairwise accuracy (``metrics.pairwise_accuracy``'s rule) of
    many predictions of the same ratings at once: the true orderings are set up
    once, then every candidate costs one small array operation per annotator."""

    def __init__(self, ann: np.ndarray, y: np.ndarray):
        self.groups = []
        for a, idx in _by_annotator(ann):
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


def kernel_scale(f: np.ndarray, prior: Prior) -> float:
    """1 / mean diagonal of the kernel: puts τ on a scale-free grid."""
    if f.size == 0:
        return 1.0
    step = max(1, f.shape[0] // 4000)  # a scale: a fixed subsample is plenty
    return 1.0 / max(prior.mean_diag(f[::step]), 1e-6)


# --- the model -------------------------------------------------------------------


@dataclass
class Hyper:
    pop_lambda: float  # the base head's ridge (relative); unused by crowd_only/zero
    tau: float  # relative prior scale of δ_a (0: no personal part)
    rho: float
    gamma: float = 0.0  # low-rank (shared taste directions) share of the prior
    tau_iso: float | None = None  # τ of the isotropic pass the directions come from
    base: str = "crowd"  # the fitted annotators' base head (BASES)
    new_base: str = "crowd"  # newcomers' base head (their k = 0 prediction)
    new_lambda: float | None = None  # its ridge; None: pop_lambda
    new_tau: float | None = None  # newcomers' τ; None: tau
    # Fitted annotators' heads as a blend of the family's members (``stacking``):
    # weights (model, population, ridge, consensus) and the members' own λ / τ.
    blend: tuple | None = None
    ridge_tau: float | None = None
    blend_pop_lambda: float | None = None
    blend_crowd_lambda: float | None = None

    def as_dict(self) -> dict:
        return {
            "blend": None if self.blend is None else [float(w) for w in self.blend],
            "ridge_tau": self.ridge_tau,
            "blend_pop_lambda": self.blend_pop_lambda,
            "blend_crowd_lambda": self.blend_crowd_lambda,
            "pop_lambda": self.pop_lambda,
            "tau": self.tau,
            "rho": self.rho,
            "gamma": self.gamma,
            "tau_iso": self.tau_iso,
            "base": self.base,
            "new_base": self.new_base,
            "new_lambda": self.new_lambda,
            "new_tau": self.new_tau,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Hyper:
        return cls(
            pop_lambda=float(d["pop_lambda"]),
            tau=float(d["tau"]),
            rho=float(d["rho"]),
            gamma=float(d.get("gamma", 0.0)),
            tau_iso=None if d.get("tau_iso") is None else float(d["tau_iso"]),
            base=str(d.get("base", "crowd")),
            new_base=str(d.get("new_base", "crowd")),
            new_lambda=None if d.get("new_lambda") is None else float(d["new_lambda"]),
            new_tau=None if d.get("new_tau") is None else float(d["new_tau"]),
            blend=None if d.get("blend") is None else tuple(d["blend"]),
            ridge_tau=_opt(d.get("ridge_tau")),
            blend_pop_lambda=_opt(d.get("blend_pop_lambda")),
            blend_crowd_lambda=_opt(d.get("blend_crowd_lambda")),
        )

    @property
    def newcomer_lambda(self) -> float:
        return self.pop_lambda if self.new_lambda is None else self.new_lambda

    @property
    def newcomer_tau(self) -> float:
        return self.tau if self.new_tau is None else self.new_tau


@dataclass
class Model:
    """A fitted model: feature standardisation, base heads, the heads of the
    annotators it was fitted on (already w0 + δ_a), their normalisation."""

    feat: Features
    w0: np.ndarray  # base head of the fitted annotators
    heads: np.ndarray  # (n_ann, d+2) float32; rows of unfitted annotators = w_new
    fitted: np.ndarray  # bool per annotator
    norm_mean: np.ndarray
    norm_std: np.ndarray
    hyper: Hyper
    kscale: float  # the kernel scale τ is relative to
    global_std: float
    prior: Prior | None = None
    w_new: np.ndarray | None = None  # newcomers' base head (None: w0)
    # (d+1,): E[crowd feature | x] = [x, 1] · crowd_fill, for images nobody
    # else rated; None (older checkpoints): 0, as before.
    crowd_fill: np.ndarray | None = None

    @property
    def newcomer_base(self) -> np.ndarray:
        return self.w0 if self.w_new is None else self.w_new

    def crowd_expected(self, x: np.ndarray) -> np.ndarray:
        """The expected crowd feature of images with content ``x`` (standardised
        rows), for images no one else has rated."""
        if self.crowd_fill is None:
            return np.zeros(x.shape[0])
        return x @ self.crowd_fill[:-1] + self.crowd_fill[-1]

    def spread(self, f: np.ndarray, *, fitted: bool) -> HeadSpread:
        """The posterior spread of an annotator's own head given the features
        ``f`` of the ratings it was fitted (``fitted``) or adapted from."""
        prior = self.prior or prior_diag(self.w0.size - 2, self.hyper.rho)
        tau = self.hyper.tau if fitted else self.hyper.newcomer_tau
        if fitted and self.hyper.blend is not None:
            tau *= float(self.hyper.blend[0]) ** 2  # the model member's share
        return HeadSpread.build(f, tau * self.kscale, prior)

    def adapt(
        self, f: np.ndarray, y_raw: np.ndarray, *, tau: float | None = None
    ) -> tuple[np.ndarray, float, float]:
        """(head, mean, std) for a newcomer from their ratings alone (features
        ``f``): the posterior mean around the newcomer base under the fitted
        annotators' prior, so their own ratings weigh more as they add up."""
        base = self.newcomer_base
        n = y_raw.size
        if n == 0:
            return base.astype(np.float32), float("nan"), self.global_std
        r = Ratings(np.zeros(n, np.int64), np.zeros(n, np.int64), y_raw)
        m, s = norm_stats(r, 1, fallback_std=self.global_std)
        y = (y_raw - m[0]) / s[0]
        prior = self.prior or prior_diag(base.size - 2, self.hyper.rho)
        uk = user_kernel(f, y - f @ base, prior)
        tau2 = (self.hyper.newcomer_tau if tau is None else tau) * self.kscale
        head = base + user_delta(uk, tau2, prior)
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
    """Fit the base heads and every annotator's head on ``fit``, with given
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
    gram, rhs = _pop_gram(f, y, pop_extra, x)
    w0 = base_head(gram, rhs, hyper.base, hyper.pop_lambda)
    w_new = base_head(gram, rhs, hyper.new_base, hyper.newcomer_lambda)
    fill = crowd_fill_fit(x, fit.row, f[:, -2])
    resid = y - f @ w0
    if prior is None:
        prior = _prior_from_fit(f, resid, fit, n_ann, hyper, x.shape[1])
    deltas, kscale = heads_fit(f, resid, fit.ann, n_ann, prior, hyper.tau)
    fitted = np.bincount(fit.ann, minlength=n_ann) > 0
    own = w0[None, :] + deltas
    if hyper.blend is not None:
        own = _blended(own, f, y, fit, n_ann, hyper, gram, rhs)
    heads = np.where(fitted[:, None], own, w_new[None, :])
    return Model(
        feat,
        w0,
        heads.astype(np.float32),
        fitted,
        mean,
        std,
        hyper,
        kscale,
        global_std,
        prior,
        w_new=w_new,
        crowd_fill=fill,
    )


def _blended(model, f, y, fit, n_ann, hyper: Hyper, gram, rhs) -> np.ndarray:
    """The deployed blend (``stacking``): the members refitted on ``fit`` with
    the hyper-parameters selection gave them."""
    from .stacking import blend_heads

    content = f.copy()
    content[:, -2] = 0.0
    ridge_prior = prior_diag(f.shape[1] - 2, 0.0)
    ridge, _ = heads_fit(content, y, fit.ann, n_ann, ridge_prior, hyper.ridge_tau)
    pop = base_head(gram, rhs, "content", hyper.blend_pop_lambda)
    crowd = base_head(gram, rhs, "crowd_only", hyper.blend_crowd_lambda)
    return blend_heads(hyper.blend, model, pop, ridge, crowd)


def _opt(value) -> float | None:
    return None if value is None else float(value)


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


def _pop_gram(f, y, pop_extra, x) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix for the base heads; ``pop_extra`` = (rows, normalised scores)
    of external population data, rows into ``x`` (crowd feature 0: nobody rated
    them here)."""
    if pop_extra is not None and pop_extra[0].size:
        rows, ey = pop_extra
        fe = Features.full(x[rows], np.zeros(rows.size, np.float32))
        f = np.vstack([f, fe])
        y = np.concatenate([y, ey])
    return gram_of(f, y)


def _by_annotator(ann: np.ndarray):
    order = np.argsort(ann, kind="stable")
    a_sorted = ann[order]
    bounds = np.flatnonzero(np.diff(a_sorted)) + 1
    for idx in np.split(order, bounds):
        if idx.size:
            yield int(ann[idx[0]]), idx
