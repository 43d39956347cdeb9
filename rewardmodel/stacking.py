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
leave-one-out consensus's form). Everything is learnt from the members'
predictions **out of fold**: on val_seen (two seeded folds of its annotators,
each fold's model from the configuration chosen on the other, so the grid's
optimism buys the model no weight) and on the train images (``crossfit``:
every member refitted without the held images):

* the **least-squares blend** (``ls_direction``): non-negative least squares of
  the ratings on the members' predictions, both centred per annotator
  (pairwise accuracy only sees each annotator's own ordering) and the
  predictions standardised; a member that adds nothing gets (near) 0;
* the **best single member** (``best_member``, by mean pairwise accuracy),
  bagged: the share of bootstrap resamples of the annotators each member wins,
  so two members that are close both count instead of one by a coin toss;
* the blend **shrunk toward the best member** (``choose_weights``): the
  direction (1 − α) · best + α · least squares, α = 1 unless a smaller α
  beats it by ``SHRINK_Z`` standard errors on nested folds of the **images**
  (``choose_shrinkage``: the blend meets new images), then one least-squares
  scale (for MAE).

Soft on purpose: a bagged argmax over a simplex of weights and an all-or-nothing
"blend or best member" both lost points (RESULTS.md). Reads train and validation.

**Per-annotator weights** (``per_annotator_weights``): on the standardised,
per-annotator centred columns Z_a, weights u_a ~ N(u_pooled, τ² I), centred
ratings y_a ~ N(Z_a u_a, σ² I); τ²/σ² by type-II maximum likelihood over the
val_seen annotators, u_a its posterior mean u_pooled + (σ²/τ² I + Z_aᵀZ_a)⁻¹
Z_aᵀ(y_a − Z_a u_pooled), clipped at 0. Deployed only if out of fold they beat
the global blend (``choose_blend_mode``: each annotator's val_seen ratings
halved). Newcomers and annotators without val_seen ratings: pooled weights.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from .metrics import PairScorer, mean_pairwise
from .taste import base_head, forward, ridge_heads

MEMBERS = ("model", "population", "ridge", "consensus")
# The fifth member where ``Data.similar`` asks for it (training's default):
# the similarity-weighted consensus (``crowd.Similar``; RESULTS.md, issue 26).
SIMILAR_MEMBERS = (*MEMBERS, "similar")
SHRINK_GRID = np.round(np.linspace(0.0, 1.0, 11), 2)  # α: 0 = best member
SPLITS, SPLIT_SEED = 10, 26  # seeded halvings of the val_seen images for α
SHRINK_Z = 1.0  # α < 1 only if it beats α = 1 by this many SEs (seeds 0-9, 600 × 80:
# 0 lost 0.0010 on synthetic, 2 kept a tiny-clip seed at -0.028; RESULTS.md)
BAGS, BAG_SEED = 30, 26  # bootstrap resamples behind the (soft) best member
MIN_BLEND_ANNOTATORS = 20  # fewer val_seen annotators: the best member alone
# Per-annotator weights: "auto" chooses them or the global blend out of fold
# (``choose_blend_mode``); "global" never tries them; "per_annotator" forces them.
BLEND_MODES = ("auto", "global", "per_annotator")
BLEND_MODE = "auto"
EB_RATIOS = np.logspace(-3, 1.5, 19)  # τ²/σ² grid for the type-II likelihood
MODE_SPLITS, MODE_SEED = 5, 26  # seeded halvings of each annotator's ratings
MODE_Z = 2.0  # per-annotator only if it wins by this many standard errors (tuned on
# seeds 0-3 of taste_benchmark.py, RESULTS.md 2026-12-07: 0 and 1 lost 0.0032 on a seed)


def centred(p: np.ndarray, ann: np.ndarray) -> np.ndarray:
    """``p`` (n,) or (n, M) less each annotator's mean."""
    cnt = np.maximum(np.bincount(ann), 1).astype(np.float64)
    if p.ndim == 1:
        return p - (np.bincount(ann, weights=p) / cnt)[ann]
    means = np.stack([np.bincount(ann, weights=c) for c in p.T], 1) / cnt[:, None]
    return p - means[ann]


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares of ``b`` on the columns of ``a`` (M ≤ 6),
    exactly: every subset of columns solved, those with a negative weight
    dropped, the smallest squared error kept."""
    m = a.shape[1]
    best, best_sse = np.zeros(m), float(b @ b)
    for size in range(1, m + 1):
        for cols in combinations(range(m), size):
            sub = a[:, cols]
            w, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if (w < 0).any():
                continue
            sse = float(np.sum((b - sub @ w) ** 2))
            if sse < best_sse - 1e-12 * max(best_sse, 1.0):
                best_sse, best = sse, np.zeros(m)
                best[list(cols)] = w
    return best


def _scales(p: np.ndarray, ann: np.ndarray) -> np.ndarray:
    """Standard deviation of each column centred per annotator; a column that
    is constant within every annotator ranks nothing and gets ``inf`` (so any
    direction divided by it weights it 0)."""
    sd = centred(p, ann).std(axis=0)
    return np.where(sd <= 1e-12, np.inf, sd)


def ls_direction(p: np.ndarray, y: np.ndarray, ann: np.ndarray) -> np.ndarray:
    """Weights on standardised columns (summing to 1, non-negative) of the
    non-negative least-squares blend, per annotator centred; zeros if
    nothing is positive."""
    sd = _scales(p, ann)
    live = np.flatnonzero(np.isfinite(sd))
    d = np.zeros(p.shape[1])
    if live.size:
        pc = centred(p[:, live], ann) / sd[live]
        d[live] = nnls(pc, centred(np.asarray(y, np.float64), ann))
    return d / d.sum() if d.sum() > 0 else d


def best_member(p, y, ann) -> np.ndarray:
    """The best single member, softly: for each of ``BAGS`` seeded bootstrap
    resamples of the annotators, the column with the best mean per-annotator
    pairwise accuracy (first of equals, ``MEMBERS`` order; constant columns
    never); the share of resamples each column won (sums to 1). Where two
    members are close this is a mixture of both rather than a coin toss."""
    per_ann = PairScorer(ann, y).of_matrix(p)
    ok = np.isfinite(_scales(p, ann))
    share = np.zeros(p.shape[1])
    if not per_ann.size or not ok.any():
        share[0] = 1.0
        return share
    rng = np.random.default_rng(BAG_SEED)
    n = per_ann.shape[0]
    for _ in range(BAGS):
        acc = per_ann[rng.integers(0, n, size=n)].mean(axis=0)
        acc = np.where(ok & ~np.isnan(acc), acc, -1.0)
        share[int(np.argmax(np.round(acc, 12)))] += 1.0
    return share / share.sum()


def shrink_path(p, y, ann) -> np.ndarray:
    """(M, len(SHRINK_GRID)): for each α the raw-scale weights of
    (1 − α) · best member + α · least-squares blend (standardised columns)."""
    sd = _scales(p, ann)
    best = best_member(p, y, ann)
    ls = ls_direction(p, y, ann)
    if not ls.any():
        ls = best
    dirs = (1.0 - SHRINK_GRID)[None, :] * best[:, None] + SHRINK_GRID[None, :] * ls[
        :, None
    ]
    return dirs / sd[:, None]


def choose_shrinkage(
    p: np.ndarray, y: np.ndarray, ann: np.ndarray, img: np.ndarray | None = None
) -> dict:
    """α on nested folds over the **images** (``img``; None: each rating its
    own): ``SPLITS`` seeded halvings, the path fitted on everyone's ratings of
    one half, every α scored on the other (the curve: mean held-out pairwise
    accuracy). The blend meets new images; halving the annotators left both
    sides on the same few images, where a member that ranked them well by
    chance looked safe (RESULTS.md, "the blend's folds over images"). α = 1
    unless the best α beats it by ``SHRINK_Z`` paired per-annotator standard
    errors. Fewer than ``MIN_BLEND_ANNOTATORS`` annotators: α 0."""
    scorer = PairScorer(ann, y)
    people = scorer.annotators
    if people.size < MIN_BLEND_ANNOTATORS:
        return {"alpha": 0.0, "curve": None, "why": "too few annotators"}
    img = np.arange(ann.size) if img is None else np.asarray(img)
    images = np.unique(img)
    rng = np.random.default_rng(SPLIT_SEED)
    per, seen = np.zeros((people.size, SHRINK_GRID.size)), np.zeros(people.size)
    for _ in range(SPLITS):
        half = np.zeros(images.size, bool)
        half[rng.permutation(images.size)[: images.size // 2]] = True
        for held in (half, ~half):
            test = np.isin(img, images[held])
            path = shrink_path(p[~test], y[~test], ann[~test])
            sc = PairScorer(ann[test], y[test])
            pos = np.searchsorted(people, sc.annotators)
            per[pos] += sc.of_matrix(p[test] @ path)
            seen[pos] += 1
    curve = per.sum(axis=0) / max(seen.sum(), 1)
    best = int(np.argmax(np.round(curve, 12)))
    d = (per[:, best] - per[:, -1])[seen > 0] / seen[seen > 0]
    gain = float(d.mean()) if d.size else 0.0
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else np.inf
    shrink = gain > 0 and gain >= SHRINK_Z * se
    return {
        "alpha": float(SHRINK_GRID[best]) if shrink else 1.0,
        "curve": [round(float(c), 5) for c in curve],
        "best_alpha": float(SHRINK_GRID[best]),
        "gain": round(gain, 5),
        "se": round(se, 5),
        "images": int(images.size),
    }


def choose_weights(
    p: np.ndarray,
    y: np.ndarray,
    ann: np.ndarray,
    alpha: float | None = None,
    *,
    score: bool = True,
) -> tuple:
    """Blend weights of the columns of ``p`` (members' out-of-fold predictions
    of ratings ``y`` by annotators ``ann``): the least-squares blend shrunk
    toward the best member by ``alpha`` (chosen by ``choose_shrinkage`` if not
    given), then the least-squares scale of the blend. Returns (weights, mean
    per-annotator pairwise accuracy of the blend on these ratings (nan unless
    ``score``), α)."""
    y = np.asarray(y, np.float64)
    if alpha is None:
        alpha = choose_shrinkage(p, y, ann)["alpha"]
    path = shrink_path(p, y, ann)
    direction = path[:, int(np.argmin(np.abs(SHRINK_GRID - alpha)))]
    blend = p @ direction
    s = max(float(blend @ y), 0.0) / max(float(blend @ blend), 1e-12)
    w = direction * (s if s > 0 else 1.0)
    if not score:
        return w, float("nan"), alpha
    acc = float(PairScorer(ann, y).of_matrix((p @ w)[:, None]).mean())
    return w, acc, alpha


def blend_heads(weights, model, pop, ridge, consensus) -> np.ndarray:
    """Per-annotator blended heads (n_ann, d) from the members' heads (model
    and ridge per annotator, population and consensus shared); ``weights``
    (M,) for everyone, or (n_ann, M) per annotator."""
    w = np.atleast_2d(np.asarray(weights, np.float64))
    ridge = np.asarray(ridge, np.float64).copy()
    ridge[:, -2] = 0.0  # the ridge sees content only
    return (
        w[:, 0:1] * np.asarray(model, np.float64)
        + w[:, 1:2] * np.asarray(pop, np.float64)[None, :]
        + w[:, 2:3] * ridge
        + w[:, 3:4] * np.asarray(consensus, np.float64)[None, :]
    )


def weights_of(hyper):
    """What ``blend_heads`` takes from a ``taste.Hyper``: the per-annotator
    table where selection chose one, else the pooled weights."""
    per = hyper.blend_annotators
    return hyper.blend if per is None else per


def model_share(hyper, index: int | None = None) -> float:
    """The model member's blend weight (annotator ``index``'s own if any): the
    spread of a fitted annotator's own part scales with it."""
    if hyper.blend_annotators is not None and index is not None:
        return float(hyper.blend_annotators[index, 0])
    return float(hyper.blend[0]) if hyper.blend is not None else 1.0


def refit_blend(model, f, y, fit, n_ann, hyper, gram, rhs) -> np.ndarray:
    """The deployed blend: the members refitted on ``fit`` with the
    hyper-parameters selection gave them (``taste.fit_heads``)."""
    ridge, _ = ridge_heads(f, y, fit.ann, n_ann, hyper.ridge_tau2_rel)
    pop = base_head(gram, rhs, "content", hyper.blend_pop_lambda)
    crowd = base_head(gram, rhs, "crowd_only", hyper.blend_crowd_lambda)
    return blend_heads(weights_of(hyper), model, pop, ridge, crowd)


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


def blend_out_of_fold(
    search, *, pop, ridge, consensus, mode=None, similar=None, train=None
) -> tuple[tuple, dict, tuple | None]:
    """The members' weights out of fold: on val_seen, each fold's model from
    the configuration chosen on the other (``search``: the val_seen search),
    and on ``train`` (``crossfit.train_rows``' (p, y, ann, img)) if given.
    Also the members' and the blend's accuracy on val_seen and the shrinkage.
    Third: (annotators, weights (P, M)) where per-annotator weights were
    chosen on val_seen (``mode``, default ``BLEND_MODE``), else None.
    ``similar``: the fifth member on val_seen (``search.vs`` order) or None."""
    mode = BLEND_MODE if mode is None else mode
    names = MEMBERS if similar is None else SIMILAR_MEMBERS
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode {mode!r}: one of {', '.join(BLEND_MODES)}")
    v, sc = search.vs, search.sc
    cols, ys, anns, imgs = [], [], [], []
    for held in (search.fold, ~search.fold):
        if not held.any() or held.all():
            continue
        model = search.heads_of(search._pick(~held))
        idx = np.flatnonzero(np.isin(v.r.ann, sc.annotators[held]))
        ann = v.r.ann[idx]
        col = member_columns(v.f[idx], ann, model, pop, ridge, consensus)
        if similar is not None:
            col = np.column_stack([col, similar[idx]])
        cols.append(col)
        ys.append(v.y[idx])
        anns.append(ann)
        imgs.append(v.r.row[idx])
    if not cols:
        only = (1.0,) + (0.0,) * (len(names) - 1)
        return only, {"weights": None, "why": "no val_seen folds"}, None
    p, y, ann = np.vstack(cols), np.concatenate(ys), np.concatenate(anns)
    every = (p, y, ann, np.concatenate(imgs))
    if train is not None:
        every = tuple(map(np.concatenate, zip(every, train, strict=True)))
    shrink = choose_shrinkage(*every)
    w, _, _ = choose_weights(*every[:3], alpha=shrink["alpha"])
    if not w.any():
        w = np.zeros(len(names))
        w[0] = 1.0
    oof = {m: mean_pairwise(ann, y, p[:, j]) for j, m in enumerate(names)}
    oof["blend"] = mean_pairwise(ann, y, p @ w)
    info = {
        "weights": dict(zip(names, w.tolist(), strict=True)),
        "oof": oof,
        "shrinkage": shrink,
        "train_ratings": 0 if train is None else int(train[1].size),
    }
    per = None
    if mode != "global":
        info["per_annotator"], per = _per_annotator_part(
            p, y, ann, w, mode, shrink, names
        )
    return tuple(float(x) for x in w), info, per


# --- per-annotator weights shrunk toward the pooled ones ----------------------------


def _per_annotator_part(
    p, y, ann, pooled, mode: str, shrink: dict, names=MEMBERS
) -> tuple:
    """(the choice's info, (n_ann, M) weights or None) for ``blend_out_of_fold``."""
    if mode == "auto":
        choice = choose_blend_mode(p, y, ann, shrink["alpha"])
    else:
        choice = {"mode": "per_annotator", "why": "forced"}
    if choice["mode"] != "per_annotator":
        return choice, None
    who, wa, eb = per_annotator_weights(p, y, ann, pooled)
    moved = np.any(np.abs(wa - pooled) > 1e-12, axis=1)
    choice.update(ratio=eb["ratio"], annotators=int(who.size), moved=int(moved.sum()))
    choice["mean_weights"] = dict(
        zip(names, np.round(wa.mean(axis=0), 6).tolist(), strict=True)
    )
    choice["weights_sum"] = round(float(wa.sum()), 9)
    return choice, (who, wa)


def _annotator_sums(z: np.ndarray, r: np.ndarray, idx: np.ndarray, n_people: int):
    """Per annotator (rows ``idx`` into 0..n_people): Zᵀ Z (P, M, M), Zᵀ r (P, M),
    rᵀ r (P,), and the count of ratings (P,)."""
    m = z.shape[1]
    gram = np.zeros((n_people, m, m))
    for i in range(m):
        for j in range(i, m):
            gram[:, i, j] = gram[:, j, i] = np.bincount(
                idx, z[:, i] * z[:, j], minlength=n_people
            )
    zr = np.stack(
        [np.bincount(idx, z[:, i] * r, minlength=n_people) for i in range(m)], 1
    )
    rr = np.bincount(idx, r * r, minlength=n_people)
    return gram, zr, rr, np.bincount(idx, minlength=n_people)


def eb_ratio(gram, zr, rr, n) -> tuple[float, list]:
    """τ²/σ² of the hierarchical model by type-II maximum likelihood (σ²
    profiled out) on the grid ``EB_RATIOS``, or 0 where no spread between
    annotators is likelier than none. Determinant lemma and Woodbury: every
    term is a per-annotator M × M system. Returns (ratio, log-likelihoods)."""
    dof = float(np.maximum(n - 1, 0).sum())  # each annotator's mean is centred out
    if dof <= 0:
        return 0.0, []
    eye = np.eye(gram.shape[1])
    lls = [-0.5 * dof * np.log(max(rr.sum() / dof, 1e-300))]
    for lam in EB_RATIOS:
        sol = np.linalg.solve(eye / lam + gram, zr[..., None])[..., 0]
        quad = float(rr.sum() - (zr * sol).sum())
        logdet = float(np.linalg.slogdet(eye + lam * gram)[1].sum())
        lls.append(-0.5 * (dof * np.log(max(quad / dof, 1e-300)) + logdet))
    best = int(np.argmax(np.round(lls, 9)))
    ratio = 0.0 if best == 0 else float(EB_RATIOS[best - 1])
    return ratio, [round(float(v), 3) for v in lls]


def per_annotator_weights(p, y, ann, pooled) -> tuple[np.ndarray, np.ndarray, dict]:
    """(annotators, their raw-scale weights (P, M), info) shrunk toward the
    raw-scale ``pooled`` weights: the posterior mean of the hierarchical model
    in the module docstring, τ²/σ² by ``eb_ratio``. Annotators whose weights all
    clip to 0 keep the pooled ones."""
    y = np.asarray(y, np.float64)
    pooled = np.asarray(pooled, np.float64)
    people, idx = np.unique(ann, return_inverse=True)
    out = np.tile(pooled, (people.size, 1))
    sd = _scales(p, ann)
    live = np.flatnonzero(np.isfinite(sd))
    if not live.size or not people.size:
        return people, out, {"ratio": 0.0, "why": "no live member"}
    z = centred(p[:, live], ann) / sd[live]
    u0 = pooled[live] * sd[live]
    r = centred(y, ann) - z @ u0
    gram, zr, rr, n = _annotator_sums(z, r, idx, people.size)
    ratio, lls = eb_ratio(gram, zr, rr, n)
    info = {"ratio": ratio, "loglik": lls}
    if ratio <= 0:
        return people, out, info
    eye = np.eye(live.size)
    u = u0 + np.linalg.solve(eye / ratio + gram, zr[..., None])[..., 0]
    u = np.maximum(u, 0.0)
    ok = u.sum(axis=1) > 0
    out[np.ix_(ok, live)] = u[ok] / sd[live]
    return people, out, info


def weights_table(pooled, per: tuple | None, n_ann: int) -> np.ndarray | None:
    """(n_ann, M): ``per`` = (annotators, weights) on their rows, ``pooled``
    on everyone else's (no val_seen ratings); None without ``per``."""
    if per is None:
        return None
    table = np.tile(np.asarray(pooled, np.float64), (n_ann, 1))
    table[per[0]] = per[1]
    return table


def rowwise(p: np.ndarray, ann: np.ndarray, people, weights, pooled) -> np.ndarray:
    """Blend of the columns of ``p`` with each row's annotator's weights
    (``people`` sorted, ``weights`` (P, M)); anyone else gets ``pooled``."""
    w = np.tile(np.asarray(pooled, np.float64), (ann.size, 1))
    pos = np.searchsorted(people, ann)
    hit = (pos < people.size) & (people[np.minimum(pos, people.size - 1)] == ann)
    w[hit] = weights[pos[hit]]
    return (p * w).sum(axis=1)


def choose_blend_mode(p, y, ann, alpha: float) -> dict:
    """Global blend or per-annotator weights, out of fold: ``MODE_SPLITS``
    seeded halvings of each annotator's ratings; on one half the pooled blend
    (at α) and the per-annotator weights are fitted, both scored on the other
    half (per-annotator pairwise accuracy), both ways. Per-annotator only if
    its mean paired gain is at least ``MODE_Z`` standard errors above 0 (each
    half has fewer ratings than the deployed weights will: a pessimistic
    test). Returns mode, gain, its standard error, and the ratios found."""
    y = np.asarray(y, np.float64)
    people = np.unique(ann)
    if people.size < MIN_BLEND_ANNOTATORS:
        return {"mode": "global", "why": "too few annotators"}
    rng = np.random.default_rng(MODE_SEED)
    gains: dict[int, list] = {}
    ratios = []
    for _ in range(MODE_SPLITS):
        order = np.lexsort((rng.random(ann.size), ann))
        rank = np.empty(ann.size, np.int64)
        starts = np.searchsorted(ann[order], ann[order])
        rank[order] = np.arange(ann.size) - starts
        first = rank % 2 == 0
        for fit in (first, ~first):
            held = ~fit
            pooled, _, _ = choose_weights(
                p[fit], y[fit], ann[fit], alpha=alpha, score=False
            )
            who, w, info = per_annotator_weights(p[fit], y[fit], ann[fit], pooled)
            ratios.append(info["ratio"])
            both = np.stack(
                [p[held] @ pooled, rowwise(p[held], ann[held], who, w, pooled)], 1
            )
            sc = PairScorer(ann[held], y[held])
            acc = sc.of_matrix(both)
            for a, (g, q) in zip(sc.annotators.tolist(), acc, strict=True):
                gains.setdefault(a, []).append(q - g)
    per = np.asarray([np.mean(v) for v in gains.values()])
    if not per.size:
        return {"mode": "global", "why": "no held-out pairs"}
    gain = float(per.mean())
    se = float(per.std(ddof=1) / np.sqrt(per.size)) if per.size > 1 else np.inf
    mode = "per_annotator" if gain > 0 and gain >= MODE_Z * se else "global"
    return {
        "mode": mode,
        "gain": round(gain, 5),
        "se": round(se, 5),
        "ratios": [round(float(r), 4) for r in ratios],
    }
