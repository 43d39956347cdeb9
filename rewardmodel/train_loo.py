"""The members' leave-one-out predictions of the train ratings (issue 26).

Per-annotator blend weights fitted on the ~8 val_seen ratings a person has
found almost no spread between people (τ²/σ² ≈ 0–0.03). Their ~80 train
ratings hold ten times as many, but the members were fitted on them: an
in-sample prediction of a rating the member saw flatters the personal members.
Leave-one-out predictions do not, and for the members' linear smoothers they
are closed form, with no refit:

* **model** and **per-annotator ridge** (posterior means, ``posterior``): with
  A = τ²K + I over the annotator's n_a ratings and r = y − F w0, the fitted
  values are r − A⁻¹r, and leaving rating i out gives the prediction
  r_i − (A⁻¹r)_i / (A⁻¹)_ii (the Gaussian-process LOO identity; one
  decomposition of A per annotator, the one selection already cached);
* **population** (one ridge on everyone's train ratings): y_i − e_i / (1 − h_ii)
  with h_ii = f_i (FᵀF + Λ)⁻¹ f_iᵀ the hat-matrix diagonal;
* **consensus** (crowd column and intercept): as is; its crowd feature on train
  already leaves the annotator's own rating out, and two coefficients fitted on
  every train rating move by O(1/n) without one of them.

The base head w0 behind the model member is held fixed (fitted on everyone's
train ratings: one rating moves it by about its hat value, ≈ d/n). Only train
ratings are read; ``stacking.train_loo_part`` fits each annotator's weights on
these and checks them against the global blend on val_seen.
"""

from __future__ import annotations

import numpy as np

from . import posterior as P
from . import stacking as S
from .metrics import PairScorer, by_annotator, mean_pairwise

FOLD_SEED = 26  # halves of the annotators for the cross-fitted taste directions


def gp_loo(f, r, prior: P.Prior, tau2: float, eig=None) -> np.ndarray:
    """Leave-one-out predictions (n_a,) of one annotator's residuals ``r``
    under the posterior mean with prior δ ~ N(0, τ² D) and unit noise
    (``tau2`` absolute). ``eig``: (eigenvalues, eigenvectors) of K = F D Fᵀ if
    already decomposed, else a float64 decomposition here."""
    r = np.asarray(r, np.float64)
    if tau2 <= 0 or r.size < 2:
        return np.zeros_like(r)  # no personal part: the base alone
    if eig is None:
        evals, evecs = np.linalg.eigh(prior.kernel(np.asarray(f, np.float64)))
    else:
        evals, evecs = (np.asarray(e, np.float64) for e in eig)
    inv = 1.0 / (tau2 * np.maximum(evals, 0.0) + 1.0)  # A⁻¹'s eigenvalues
    alpha = evecs @ (inv * (evecs.T @ r))  # A⁻¹ r
    diag = (evecs**2) @ inv  # diag(A⁻¹)
    return r - alpha / diag


def posterior_loo(
    f, y, ann, prior, w0, tau2: float, cache=None, base_loo=None
) -> np.ndarray:
    """Every rating's leave-one-out prediction (n,) by its annotator's
    posterior-mean head around base ``w0`` (``gp_loo`` per annotator; ``cache``:
    annotator → eigen-decomposition of their kernel under ``prior``).
    ``base_loo``: the base's own leave-one-out predictions, in place of its
    in-sample ones f · w0 (the personal part still fits y − f · w0)."""
    w0 = np.asarray(w0, np.float64)
    base = f.astype(np.float64) @ w0
    out = base.copy() if base_loo is None else np.asarray(base_loo, np.float64)
    if tau2 <= 0:
        return out
    for a, idx in by_annotator(ann):
        eig = None if cache is None else cache.get(a)
        out[idx] += gp_loo(f[idx], y[idx] - base[idx], prior, tau2, eig)
    return out


def ridge_loo(f, y, gram, head, kind_keep: np.ndarray, lam_pen: np.ndarray):
    """Leave-one-out predictions (n,) of one ridge fitted on every row of
    ``f`` (``gram`` = FᵀF; the columns ``kind_keep``, penalty ``lam_pen`` on
    them, as ``taste.base_head`` builds it; ``head`` its solution):
    y_i − e_i / (1 − h_ii)."""
    idx = np.flatnonzero(kind_keep)
    inv = np.linalg.inv(gram[np.ix_(idx, idx)] + np.diag(lam_pen[idx]))
    sub = f[:, idx]
    h = np.einsum("ij,ij->i", sub @ inv.astype(sub.dtype), sub).astype(np.float64)
    fitted = f.astype(np.float64) @ np.asarray(head, np.float64)
    y = np.asarray(y, np.float64)
    return y - (y - fitted) / np.maximum(1.0 - h, 1e-9)


def base_penalty(gram: np.ndarray, kind: str, lam: float):
    """(kept columns, penalty) of ``taste.base_head``'s ridge of ``kind``."""
    d = gram.shape[0]
    keep = np.ones(d, bool)
    if kind == "content":
        keep[-2] = False
    elif kind == "crowd_only":
        keep[:-2] = False
    scale = float(np.mean(np.diag(gram)[:-2])) if d > 2 else 1.0
    pen = np.full(d, lam * scale)
    pen[-2:] = 1e-6 * max(lam * scale, 1.0)
    return keep, pen


def model_loo(ctx, w0, lam, prior: P.Prior, cfg) -> np.ndarray:
    """The model member's leave-one-out predictions of the train ratings.
    Isotropic prior (γ = 0): ``posterior_loo`` as is. With the taste
    directions (γ > 0) the prior was estimated from every annotator's heads,
    their own included, so it already leans toward the rating left out (on
    the synthetic benchmark the LOO accuracy came out 0.86 against 0.67 on
    val_seen): cross-fitted instead, each half of the annotators (seeded) under
    directions from the other half's isotropic heads."""
    v = ctx.fit_view()
    f, y, ann = v.f, np.asarray(v.y, np.float64), ctx.fit.ann
    b0 = base_loo(ctx, w0, cfg.base, lam)
    if not cfg.gamma or cfg.tau2_rel <= 0:
        t2 = cfg.tau2_rel * P.kernel_scale(f, prior)
        return posterior_loo(f, y, ann, prior, w0, t2, ctx.eig_cache(prior), b0)
    iso = P.prior_diag(f.shape[1] - 2, cfg.rho)
    n_ann = ctx.data.n_ann
    heads, _ = P.heads_grid(
        f, y, ann, n_ann, iso, [w0], [cfg.tau2_rel_iso], ctx.eig_cache(iso)
    )
    deltas = heads[0, 0] - np.asarray(w0, np.float64)
    people = np.flatnonzero(np.bincount(ann, minlength=n_ann) > 0)
    half = np.zeros(n_ann, bool)
    half[np.random.default_rng(FOLD_SEED).permutation(people)[: people.size // 2]] = 1
    out = np.empty(ann.size)
    for fold in (half, ~half):
        other = np.setdiff1d(people, np.flatnonzero(fold))
        fp = P.prior_with_directions(iso, deltas[other], gamma=cfg.gamma)
        rows = fold[ann]
        t2 = cfg.tau2_rel * P.kernel_scale(f, fp)
        out[rows] = posterior_loo(
            f[rows], y[rows], ann[rows], fp, w0, t2, None, b0[rows]
        )
    return out


def base_loo(ctx, head, kind: str, lam) -> np.ndarray:
    """A base head's leave-one-out predictions of the train ratings
    (``ridge_loo`` on the Gram matrix ``ctx.base`` memoises); 0 for the zero
    base. Every member's shared part is left out the same way: a member whose
    base is in-sample next to one whose base is not would differ by
    h_ii e_i / (1 − h_ii), which holds the rating itself."""
    v = ctx.fit_view()
    if kind == "zero":
        return np.zeros(v.y.size)
    ctx.base(kind, lam)  # makes sure the train Gram matrix is memoised
    gram = ctx.data.heads_memo["gram"][0]
    keep, pen = base_penalty(gram, kind, lam)
    return ridge_loo(v.f, v.y, gram, head, keep, pen)


def member_matrix(ctx, *, model: tuple, pop: tuple, ridge_tau2_rel, consensus):
    """(n_train, 4) leave-one-out predictions of the train ratings of
    ``ctx`` (``evaluation.Context``) in ``stacking.MEMBERS`` order, with
    their normalised targets and annotators. ``model`` = (base head, its λ,
    prior, ``selection.Config``); ``pop`` and ``consensus`` = (head, λ) of
    the content population ridge and of the crowd-only head."""
    v = ctx.fit_view()
    f, y, ann = v.f, np.asarray(v.y, np.float64), ctx.fit.ann
    cols = [model_loo(ctx, *model), base_loo(ctx, pop[0], "content", pop[1])]
    rprior = P.prior_diag(f.shape[1] - 2, 0.0)
    rscale = P.kernel_scale(f, rprior)
    rcache = ctx.eig_cache(rprior, content_only=True)
    zero = np.zeros(f.shape[1])
    cols.append(posterior_loo(f, y, ann, rprior, zero, ridge_tau2_rel * rscale, rcache))
    cols.append(base_loo(ctx, consensus[0], "crowd_only", consensus[1]))
    return np.stack(cols, axis=1), y, ann


# --- the train form of the per-annotator weights ----------------------------------


def train_loo_part(val, pooled, loo, *, forced: bool = False) -> tuple:
    """Per-annotator weights fitted on the members' leave-one-out train
    predictions ``loo`` = (p, y, ann) (``train_loo``: ~10× the val_seen
    ratings per person), shrunk toward ``pooled`` as ``per_annotator_weights``
    does, then scored against the global blend on the val_seen out-of-fold
    predictions ``val`` = (p, y, ann), which they never saw: kept (unless
    ``forced``) only where they gain within the train predictions
    (``train_halves_gain``, ≥ ``S.LOO_TRAIN_Z`` standard errors) and on val_seen
    (≥ ``S.LOO_VAL_Z`` standard errors, and above 0). Returns (info, (people,
    weights) or None)."""
    who, wa, eb = S.per_annotator_weights(*loo, pooled)
    p, y, ann = val
    sc = PairScorer(ann, y)
    both = np.stack([p @ pooled, S.rowwise(p, ann, who, wa, pooled)], 1)
    acc = sc.of_matrix(both)
    diff = acc[:, 1] - acc[:, 0]
    diff = diff[np.isfinite(diff)]
    gain = float(diff.mean()) if diff.size else 0.0
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else np.inf
    t_gain, t_se = train_halves_gain(loo, pooled) if eb["ratio"] > 0 else (0.0, 0.0)
    win = (
        diff.size >= S.MIN_BLEND_ANNOTATORS
        and gain > 0
        and gain >= S.LOO_VAL_Z * se
        and t_gain > 0
        and t_gain >= S.LOO_TRAIN_Z * t_se
    )
    info = {
        "mode": "train_loo" if win or forced else "global",
        "gain": round(gain, 5),
        "se": round(se, 5),
        "ratio": eb["ratio"],
        "annotators": int(who.size),
        "train_loo_accuracy": [
            round(mean_pairwise(loo[2], loo[1], loo[0][:, j]), 5)
            for j in range(loo[0].shape[1])
        ],
    }
    info.update(train_gain=round(t_gain, 5), train_se=round(t_se, 5))
    if not (win or forced):
        return info, None
    info["mean_weights"] = np.round(wa.mean(axis=0), 6).tolist()
    return info, (who, wa)


def _paired_gain(per: list) -> tuple[float, float]:
    """Mean of per-annotator paired gains and its standard error."""
    per = np.asarray([np.mean(v) for v in per])
    if per.size < 2:
        return 0.0, float("inf")
    return float(per.mean()), float(per.std(ddof=1) / np.sqrt(per.size))


def train_halves_gain(loo, pooled) -> tuple[float, float]:
    """The per-annotator weights' gain over ``pooled`` within the train
    leave-one-out predictions: each annotator's rows halved ``S.MODE_SPLITS``
    seeded ways, weights fitted on one half, both scored on the other."""
    p, y, ann = loo
    rng = np.random.default_rng(S.MODE_SEED)
    gains: dict[int, list] = {}
    for _ in range(S.MODE_SPLITS):
        order = np.lexsort((rng.random(ann.size), ann))
        rank = np.empty(ann.size, np.int64)
        rank[order] = np.arange(ann.size) - np.searchsorted(ann[order], ann[order])
        first = rank % 2 == 0
        for fit in (first, ~first):
            held = ~fit
            who, w, _ = S.per_annotator_weights(p[fit], y[fit], ann[fit], pooled)
            both = np.stack(
                [p[held] @ pooled, S.rowwise(p[held], ann[held], who, w, pooled)], 1
            )
            sc = PairScorer(ann[held], y[held])
            for a, (g, q) in zip(
                sc.annotators.tolist(), sc.of_matrix(both), strict=True
            ):
                gains.setdefault(a, []).append(q - g)
    return _paired_gain(list(gains.values()))
