"""The personalised reward model, in closed form (numpy only, no torch).

For annotator *a* and image *i*, in the annotator's normalised units:

    s(a, i) = f(i) · (w0 + δ_a)        f(i) = [x_i, crowd_i^(-a), 1]

(``forward``: the one forward pass, which every prediction goes through).

* ``x_i`` — the embedding standardised per column and projected on its top
  ``MAX_DIM`` principal components (``Features``);
* ``crowd_i^(-a)`` — the leave-one-out crowd feature (``Crowd.feature``): the
  other raters' normalised ratings of the image, summed and divided by (their
  count + 1), never the annotator's own rating. For an image nobody else rated
  it is *unknown*, not 0: predictions use its expected value given the content,
  ``crowd_fill · [x, 1]`` (``crowd_fill_fit``); with 0 the shared part of taste,
  which the crowd column absorbs where it is known, would be missing from every
  new image's prediction. (While fitting, before the fill exists, it is 0.)
* ``w0`` — the **base head**, one of a nested family (``BASES``) chosen on
  validation: the content-only population ridge (the population baseline's own
  form), the population ridge with the crowd column, the crowd column alone, or
  zero (the per-annotator ridge's form);
* ``δ_a`` — the annotator's **own head**, the posterior mean under the prior
  δ_a ~ N(0, τ² D) (``posterior``: D and the dual solver). ``Hyper.tau2_rel``
  is that τ², relative to the data's kernel scale.

Every simple baseline is a member of this family (population: content base,
τ² = 0; leave-one-out consensus: crowd-only base, τ² = 0; per-annotator ridge:
zero base, ρ = 0), and the fitted annotators' deployed head is a blend of the
members (``stacking``).

**Newcomers** (annotators a version was not fitted on) get the posterior from
their k ratings under the fitted annotators' prior, around a **newcomer base**
chosen for k = 0, with a τ² scored on simulated newcomers (``newcomer_tau``).

Shape letters, here and in every module of the model (docs/rewardmodel.md):
n ratings, n_a one annotator's ratings, A annotators, e embedding width,
k content columns (principal components kept, ≤ ``MAX_DIM``), d = k + 2 feature
columns [x, crowd, 1], B bases, T values of τ², C candidate heads.

Hyper-parameters come from fixed grids on the validation splits only
(``selection``); ``fit_heads`` refits on the ratings given (deployed: all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .crowd import Crowd, crowd_expected, crowd_fill_fit
from .posterior import (
    HeadSpread,
    Prior,
    heads_grid,
    prior_diag,
    prior_for,
    user_delta,
    user_kernel,
)
from .similar import Agreement, agreement_for

# Relative grids (scaled by the data): fixed here, not per benchmark variant.
POP_GRID = tuple(10.0 ** np.arange(-3.0, 2.01, 0.5))  # × mean diagonal of F'F
RHO_GRID = (0.0, 10.0)  # crowd column's prior weight relative to one embedding dim
# Base heads (see the module docstring): "content" = population ridge without the
# crowd column, "crowd" = with it, "crowd_only" = crowd and intercept (no content),
# "zero" = none (heads shrink toward zero).
BASES = ("content", "crowd", "crowd_only", "zero")
GATHER_BLOCK = 8_192  # rows per block where features are gathered
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


def global_std(std: np.ndarray, counts: np.ndarray) -> float:
    """The typical spread of one annotator's ratings, behind a newcomer's few:
    the median std of those with two ratings or more; 1.0 when nobody has two
    (a median of nothing, NaN, would reach every newcomer's prediction)."""
    many = np.asarray(counts) > 1
    return float(np.median(np.asarray(std)[many])) if many.any() else 1.0


@dataclass
class Features:
    """Image features: the embedding standardised per column and projected on its
    top ``MAX_DIM`` principal components (all when fewer), plus the crowd and
    intercept columns. From the embeddings alone (every image of the snapshot,
    no rating): selection, report and the deployed refit share one space."""

    mean: np.ndarray  # (e,)
    std: np.ndarray  # (e,)
    proj: np.ndarray  # (e, k)

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
        """(m, e) embeddings → (m, k) content columns."""
        z = ((emb - self.mean) / self.std).astype(np.float32)
        return z @ self.proj

    @staticmethod
    def full(x: np.ndarray, crowd: np.ndarray) -> np.ndarray:
        """(m, k) content and (m,) crowd → (m, d) features [x, crowd, 1]."""
        n = x.shape[0]
        return np.hstack(
            [x, crowd.reshape(n, 1).astype(np.float32), np.ones((n, 1), np.float32)]
        )

    @staticmethod
    def full_rows(x: np.ndarray, rows: np.ndarray, crowd: np.ndarray) -> np.ndarray:
        """``full(x[rows], crowd)`` gathered into the result in blocks (no copy)."""
        m, k = rows.size, x.shape[1]
        out = np.empty((m, k + 2), dtype=np.result_type(x.dtype, np.float32))
        for blk in (slice(s, s + GATHER_BLOCK) for s in range(0, m, GATHER_BLOCK)):
            np.take(x, rows[blk], axis=0, out=out[blk, :k])
        out[:, k], out[:, k + 1] = np.asarray(crowd).astype(np.float32), 1.0
        return out


def forward(
    x: np.ndarray,
    crowd: np.ndarray,
    head: np.ndarray,
    ann: np.ndarray | None = None,
    *,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The model's score in normalised units, s = x · h[:k] + crowd · h[k] +
    h[k+1]: **the one forward pass** (evaluation, comparison and serving call
    it, so served and trained predictions cannot drift apart).

    ``head``: one head (d,) for every row → (m,); C candidate heads (C, d) →
    (m, C); or, with ``ann`` (m,), one head per annotator (A, d), row i scored
    with ``head[ann[i]]`` → (m,). The content product runs in the dtypes given
    (serving passes float32). ``rows``: ``x`` is a cache of content rows and
    the rows scored are ``x[rows]`` (one head only; for many rows one pass over
    the whole cache is cheaper than gathering them first)."""
    head = np.asarray(head)
    if ann is not None:
        h = head[ann]
        return np.einsum("ij,ij->i", x, h[:, :-2]) + crowd * h[:, -2] + h[:, -1]
    if rows is not None:
        if rows.size * 4 > x.shape[0]:
            content = (x @ head[:-2])[rows]
        else:
            content = x[rows] @ head[:-2]
        return content + crowd * head[-2] + head[-1]
    if head.ndim == 1:
        return x @ head[:-2] + crowd * head[-2] + head[-1]
    return x @ head[:, :-2].T + crowd[:, None] * head[:, -2] + head[:, -1]


def base_head(gram: np.ndarray, rhs: np.ndarray, kind: str, lam: float) -> np.ndarray:
    """A base head (d,) of kind ``kind`` (``BASES``) from the Gram matrix (d, d)
    and right-hand side (d,) of [x, crowd, 1] features: ridge on the kept
    columns, ``lam`` relative to the mean energy of the content columns; crowd
    and intercept barely penalised. Every caller (model, population baseline,
    deployed refit) goes through here, so equal choices give bit-identical
    heads."""
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
    """F'F (d, d) and F'y (d,) in float64 (float32 products: no float64 copy of
    f)."""
    gram = (f.T @ f).astype(np.float64)
    rhs = (f.T @ np.asarray(y, dtype=np.float32)).astype(np.float64)
    return gram, rhs


# --- the model -------------------------------------------------------------------


@dataclass
class Hyper:
    """Selected hyper-parameters. Every ``*tau2_rel`` is a prior variance τ² of
    the personal head relative to the kernel scale (``posterior``); 0: no
    personal part. Checkpoints written before the rename stored them as
    ``tau``, ``tau_iso``, ``new_tau``, ``ridge_tau``: ``from_dict`` reads both."""

    pop_lambda: float  # the base head's ridge (relative); unused by crowd_only/zero
    tau2_rel: float  # the fitted annotators' relative τ²
    rho: float
    gamma: float = 0.0  # low-rank (shared taste directions) share of the prior
    tau2_rel_iso: float | None = None  # of the isotropic pass giving the directions
    base: str = "crowd"  # the fitted annotators' base head (BASES)
    new_base: str = "crowd"  # newcomers' base head (their k = 0 prediction)
    new_lambda: float | None = None  # its ridge; None: pop_lambda
    new_tau2_rel: float | None = None  # newcomers' relative τ²; None: tau2_rel
    # Fitted annotators' heads as a blend of the family's members (``stacking``):
    # weights (model, population, ridge, consensus) and the members' own λ / τ².
    blend: tuple | None = None
    # Not in ``as_dict`` (arrays): (A, 4) per-annotator weights where selection chose
    # them, else None; (A,) the similar crowd's (``crowd.Similar``), else None.
    blend_annotators: np.ndarray | None = field(default=None, compare=False)
    blend_similar: np.ndarray | None = field(default=None, compare=False)
    ridge_tau2_rel: float | None = None
    blend_pop_lambda: float | None = None
    blend_crowd_lambda: float | None = None

    # key in as_dict -> the key checkpoints used before the τ² names
    OLD_KEYS = {
        "tau2_rel": "tau",
        "tau2_rel_iso": "tau_iso",
        "new_tau2_rel": "new_tau",
        "ridge_tau2_rel": "ridge_tau",
    }

    def as_dict(self) -> dict:
        return {
            "blend": None if self.blend is None else [float(w) for w in self.blend],
            "blend_mode": "global"
            if self.blend_annotators is None
            else "per_annotator",
            "ridge_tau2_rel": self.ridge_tau2_rel,
            "blend_pop_lambda": self.blend_pop_lambda,
            "blend_crowd_lambda": self.blend_crowd_lambda,
            "pop_lambda": self.pop_lambda,
            "tau2_rel": self.tau2_rel,
            "rho": self.rho,
            "gamma": self.gamma,
            "tau2_rel_iso": self.tau2_rel_iso,
            "base": self.base,
            "new_base": self.new_base,
            "new_lambda": self.new_lambda,
            "new_tau2_rel": self.new_tau2_rel,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Hyper:
        d = {**{new: d[old] for new, old in cls.OLD_KEYS.items() if old in d}, **d}
        return cls(
            pop_lambda=float(d["pop_lambda"]),
            tau2_rel=float(d["tau2_rel"]),
            rho=float(d["rho"]),
            gamma=float(d.get("gamma", 0.0)),
            tau2_rel_iso=_opt(d.get("tau2_rel_iso")),
            base=str(d.get("base", "crowd")),
            new_base=str(d.get("new_base", "crowd")),
            new_lambda=_opt(d.get("new_lambda")),
            new_tau2_rel=_opt(d.get("new_tau2_rel")),
            blend=None if d.get("blend") is None else tuple(d["blend"]),
            ridge_tau2_rel=_opt(d.get("ridge_tau2_rel")),
            blend_pop_lambda=_opt(d.get("blend_pop_lambda")),
            blend_crowd_lambda=_opt(d.get("blend_crowd_lambda")),
        )

    @property
    def newcomer_lambda(self) -> float:
        return self.pop_lambda if self.new_lambda is None else self.new_lambda

    @property
    def newcomer_tau2_rel(self) -> float:
        return self.tau2_rel if self.new_tau2_rel is None else self.new_tau2_rel

    @property
    def iso_tau2_rel(self) -> float:
        return self.tau2_rel if self.tau2_rel_iso is None else self.tau2_rel_iso


@dataclass
class Model:
    """A fitted model: feature standardisation, base heads, the heads of the
    annotators it was fitted on (already w0 + δ_a), their normalisation."""

    feat: Features
    w0: np.ndarray  # (d,) base head of the fitted annotators
    heads: np.ndarray  # (A, d) float32; rows of unfitted annotators = w_new
    fitted: np.ndarray  # (A,) bool
    norm_mean: np.ndarray  # (A,)
    norm_std: np.ndarray  # (A,)
    hyper: Hyper
    kscale: float  # the kernel scale τ² is relative to
    global_std: float  # ``global_std`` of the fit ratings
    prior: Prior | None = None
    w_new: np.ndarray | None = None  # (d,) newcomers' base head (None: w0)
    # (k + 1,): E[crowd | x] = [x, 1] · crowd_fill (unrated images); None: 0
    crowd_fill: np.ndarray | None = None
    similar: Agreement | None = None  # the similar crowd's constants (None: off)

    @property
    def newcomer_base(self) -> np.ndarray:
        return self.w0 if self.w_new is None else self.w_new

    def crowd_expected(self, x: np.ndarray) -> np.ndarray:
        """The expected crowd feature of images with content ``x`` (m, k), for
        images no one else has rated."""
        return crowd_expected(self.crowd_fill, x)

    def spread(self, f: np.ndarray, *, fitted: bool, index=None) -> HeadSpread:
        """The posterior spread of an annotator's own head given the features
        ``f`` (n_a, d) of the ratings it was fitted (``fitted``; ``index``: their
        row, for their own blend weights) or adapted from."""
        prior = self.prior or prior_diag(self.w0.size - 2, self.hyper.rho)
        tau2_rel = self.hyper.tau2_rel if fitted else self.hyper.newcomer_tau2_rel
        if fitted and self.hyper.blend is not None:
            from .stacking import model_share

            tau2_rel *= model_share(self.hyper, index) ** 2
        return HeadSpread.build(f, tau2_rel * self.kscale, prior)

    def adapt(
        self, f: np.ndarray, y_raw: np.ndarray, *, tau2_rel: float | None = None
    ) -> tuple[np.ndarray, float, float]:
        """(head, mean, std) for a newcomer from their ratings alone (features
        ``f`` (n_a, d)): the posterior mean around the newcomer base under the
        fitted annotators' prior, so their own ratings weigh more as they add
        up."""
        base = self.newcomer_base
        prior = self.prior or prior_diag(base.size - 2, self.hyper.rho)
        t2 = self.hyper.newcomer_tau2_rel if tau2_rel is None else tau2_rel
        head, m, s = adapted_head(
            f,
            y_raw,
            base=base,
            prior=prior,
            tau2=t2 * self.kscale,
            fallback_std=self.global_std,
        )
        return head.astype(np.float32), m, s


def adapted_head(
    f: np.ndarray,
    y_raw: np.ndarray,
    *,
    base: np.ndarray,
    prior: Prior,
    tau2: float | np.ndarray,
    fallback_std: float,
) -> tuple[np.ndarray, float, float]:
    """(head, mean, std) of someone from their ratings alone (features ``f``
    (n_a, d), raw scores): their mean and std (shrunk toward ``fallback_std``),
    and the posterior mean around ``base`` at absolute τ² ``tau2`` (T values:
    heads (T, d), one decomposition). The one adaptation: served newcomers
    (``Model.adapt``), the report's and selection's simulated (``newcomer_tau``)."""
    n, many = y_raw.size, np.ndim(tau2) > 0
    if n == 0:
        head = np.tile(base, (len(tau2), 1)) if many else np.asarray(base)
        return head, float("nan"), fallback_std
    r = Ratings(np.zeros(n, np.int64), np.zeros(n, np.int64), y_raw)
    m, s = norm_stats(r, 1, fallback_std=fallback_std)
    y = (y_raw - m[0]) / s[0]
    uk = user_kernel(f, y - f @ base, prior)
    delta = [user_delta(uk, float(t), prior) for t in (tau2 if many else [tau2])]
    return base + (np.stack(delta) if many else delta[0]), float(m[0]), float(s[0])


def fit_heads(
    *,
    emb: np.ndarray,
    fit: Ratings,
    n_ann: int,
    hyper: Hyper,
    pop_extra: tuple[np.ndarray, np.ndarray] | None = None,
    prior: Prior | None = None,
    feat: Features | None = None,
    x: np.ndarray | None = None,  # feat.x(emb), if at hand
) -> Model:
    """Fit the base heads and every annotator's head on ``fit``, with given
    hyper-parameters (no selection). ``prior`` (with its taste directions), when
    given, is used as it is; else ``prior_for`` estimates it on ``fit``."""
    feat = feat or Features.build(emb)
    mean, std = norm_stats(fit, n_ann)
    counts = np.bincount(fit.ann, minlength=n_ann)
    y = normalised(fit, mean, std)
    x = feat.x(emb) if x is None else x
    crowd = Crowd.build(fit, y, emb.shape[0]).feature(fit.row, y)
    f = Features.full_rows(x, fit.row, crowd)
    gram, rhs = _pop_gram(f, y, pop_extra, x)
    w0 = base_head(gram, rhs, hyper.base, hyper.pop_lambda)
    w_new = base_head(gram, rhs, hyper.new_base, hyper.newcomer_lambda)
    fill = crowd_fill_fit(x, fit.row, f[:, -2], lambdas=POP_GRID)
    if prior is None:
        prior = prior_for(
            f,
            y,
            fit.ann,
            n_ann,
            w0=w0,
            rho=hyper.rho,
            gamma=hyper.gamma,
            tau2_rel_iso=hyper.iso_tau2_rel,
        )
    grid, kscale = heads_grid(f, y, fit.ann, n_ann, prior, [w0], [hyper.tau2_rel])
    own = grid[0, 0]
    if hyper.blend is not None:
        from .stacking import refit_blend

        own = refit_blend(own, f, y, fit, n_ann, hyper, gram, rhs)
    heads = np.where((counts > 0)[:, None], own, w_new[None, :])
    agree = agreement_for(hyper, fit, y, n_ann, emb.shape[0])
    return Model(
        feat,
        w0,
        heads.astype(np.float32),
        counts > 0,
        mean,
        std,
        hyper,
        kscale,
        global_std(std, counts),
        prior,
        w_new=w_new,
        crowd_fill=fill,
        similar=agree,
    )


def ridge_heads(f, y, ann, n_ann, tau2_rel: float, eig_cache=None):
    """The per-annotator ridge baseline's heads (A, d) and kernel scale: each
    annotator's ratings alone on the content columns, shrunk toward zero at
    relative τ² ``tau2_rel`` (crowd weight 0, zero base: 0 · crowd, no copy)."""
    zero = np.zeros(f.shape[1])
    prior = prior_diag(f.shape[1] - 2, 0.0)
    grid, kscale = heads_grid(f, y, ann, n_ann, prior, [zero], [tau2_rel], eig_cache)
    return grid[0, 0], kscale


def _opt(value) -> float | None:
    return None if value is None else float(value)


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
