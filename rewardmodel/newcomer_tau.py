"""The newcomers' τ², scored the way it is used (numpy, validation only).

The seen annotators' τ² is chosen for heads fitted on all their train ratings
and then blended with the baselines; a newcomer has k ratings and no blend. A τ²
that is right at a hundred ratings can be too cautious, or too bold, at five
(issue 26: newcomers fell below the population at k = 5 in some simulations,
and learned little from 20 ratings in others). So every val_seen annotator is
also scored as a **simulated newcomer**: k of their train ratings (k in
``Data.ks``) adapt the newcomer base exactly as a newcomer's would
(``taste.adapted_head``), and their val_seen ratings judge it, for every τ² of
the grid. The selected τ² stays unless it does worse there than no adaptation
(then the best τ² replaces it) or another beats it by ``z`` paired standard
errors (``pick``): a grid maximum is optimistic on the data that chose it.

With taste directions in the prior (γ > 0) the directions come from the fitted
annotators' heads, these annotators' own among them, which would make their own
taste look easy to learn from a few ratings (it favoured τ² 10 where 0.3 did
better on new people). Each half of them is therefore scored with directions
from everyone but that half (``half_priors``).
"""

from __future__ import annotations

import math

import numpy as np

from . import posterior as P
from . import taste as T
from .evaluation import Context, View
from .metrics import PairScorer, by_annotator

# Seeds apart from selection's other draws (``_Search`` folds use seed + 11).
_SUPPORT_SEED, _HALF_SEED, _PEOPLE_SEED = 13, 17, 19
# At most this many simulated newcomers (a seeded subset beyond): the standard
# error of a mean gain over 200 people is already small next to the gains that
# matter, and the cost stays flat as a study grows (issue 29).
MAX_SIMULATED = 200


def newcomer_tau2(
    ctx: Context, v: View, sc: PairScorer, *, base, prior, chosen, w0, current, z
) -> tuple[float, dict]:
    """(τ², info): ``current`` (the selected τ² for newcomers) or the grid's
    best for simulated newcomers (``pick``). ``v``, ``sc``: val_seen's view and
    pair scorer; ``base``: the newcomer base head; ``prior``: the model's (its
    directions around ``w0``, the seen annotators' base, ``chosen``'s ρ, γ and
    iso τ²)."""
    grid = np.asarray(P.TAU2_REL_GRID)
    acc = simulated_accuracies(
        ctx, v, sc, base=base, prior=prior, chosen=chosen, w0=w0, grid=grid
    )
    return pick(grid, acc, current, z)


def pick(grid: np.ndarray, acc: np.ndarray, current: float, z: float):
    """``acc`` (people, ks, T): each simulated newcomer's accuracy per k and τ²
    (NaN: not scored), averaged over k per person. The best τ² replaces
    ``current`` if ``current`` does worse than no adaptation at all (τ² = 0),
    as ``_Search.tau2_around`` does around a base, or else if its mean paired
    gain exceeds ``z`` standard errors."""
    acc = acc[~np.isnan(acc).any(axis=(1, 2))].mean(axis=1)  # (people, T)
    cur = int(np.argmin(np.abs(grid - current)))
    if not math.isclose(grid[cur], current, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"τ² {current} is not on the grid")
    info = {"people": int(acc.shape[0]), "kept": float(current)}
    if acc.shape[0] < 2:
        return float(current), info
    means = acc.mean(axis=0)
    best = int(np.argmax(means))
    d = acc[:, best] - acc[:, cur]
    se = float(np.std(d, ddof=1) / math.sqrt(d.size))
    zero = np.flatnonzero(grid == 0.0)
    worse = zero.size > 0 and means[cur] < means[zero[0]]
    win = worse or float(d.mean()) > z * se
    info |= {
        "scores": {f"{t:.3g}": float(m) for t, m in zip(grid, means, strict=True)},
        "gain": float(d.mean()),
        "se": se,
    }
    return float(grid[best] if win else current), info


def simulated_accuracies(
    ctx: Context, v: View, sc: PairScorer, *, base, prior, chosen, w0, grid
) -> np.ndarray:
    """(people, ks, T): val_seen's annotators (``v``, in annotator order) as
    newcomers adapted from k of their train ratings (one draw, seeded), scored
    on their val_seen ratings (``sc``, every τ² at once); NaN for those with
    fewer than max k train ratings or no untied pair, or beyond
    ``MAX_SIMULATED``."""
    ks = [k for k in ctx.data.ks if k > 0]
    people = [a for a, _ in by_annotator(v.r.ann)]
    out = np.full((len(people), len(ks), grid.size), np.nan)
    if not ks:
        return out
    train = dict(by_annotator(ctx.fit.ann))
    priors, half = half_priors(ctx, prior, chosen, w0, people)
    kscales = [P.kernel_scale(ctx.fit_view().f, p) for p in priors]
    rng = np.random.default_rng(ctx.data.seed + _SUPPORT_SEED)
    heads = {}  # annotator → (ks, T, d)
    for i in _simulated(people, train, max(ks), ctx.data.seed):
        a, own = people[i], train[people[i]]
        support = ctx.fit.take(own[rng.permutation(own.size)[: max(ks)]])
        f = ctx.view(support).f  # a rating's features do not depend on k
        heads[a] = [
            T.adapted_head(
                f[:k],
                support.score[:k],
                base=base,
                prior=priors[half[i]],
                tau2=grid * kscales[half[i]],
                fallback_std=ctx.global_std,
            )[0]
            for k in ks
        ]
    row = {a: i for i, a in enumerate(people)}
    scored = [row[a] for a in sc.annotators if a in heads]
    keep = np.isin(sc.annotators, list(heads))
    for j in range(len(ks)):

        def pred(a, idx, j=j):
            own = heads.get(a)
            if own is None:  # not scored: any prediction, dropped below
                return np.zeros((idx.size, grid.size))
            return T.forward(v.f[idx, :-2], v.f[idx, -2], own[j])

        out[scored, j] = sc.accuracies(pred, grid.size)[keep]
    return out


def _simulated(people: list[int], train: dict, kmax: int, seed: int) -> np.ndarray:
    """Indices of ``people`` simulated: those with ``kmax`` train ratings, at
    most ``MAX_SIMULATED`` of them (seeded), in order."""
    able = [i for i, a in enumerate(people) if len(train.get(a, ())) >= kmax]
    able = np.asarray(able, np.int64)
    if able.size <= MAX_SIMULATED:
        return able
    rng = np.random.default_rng(seed + _PEOPLE_SEED)
    return np.sort(rng.choice(able, MAX_SIMULATED, replace=False))


def half_priors(ctx: Context, prior, chosen, w0, people: list[int]):
    """([prior for half 0, prior for half 1], each person's half): with taste
    directions, each half's from the fitted annotators outside it (the
    directions' one definition, ``posterior.prior_with_directions``, on the
    same isotropic heads as ``posterior.prior_for``); without, ``prior``."""
    half = np.zeros(len(people), int)
    if prior.lowrank is None:
        return [prior, prior], half
    rng = np.random.default_rng(ctx.data.seed + _HALF_SEED)
    half[rng.permutation(len(people))[: len(people) // 2]] = 1
    v, n_ann = ctx.fit_view(), ctx.data.n_ann
    iso = P.prior_diag(ctx.x.shape[1], chosen.rho)
    heads, _ = P.heads_grid(
        v.f,
        v.y,
        ctx.fit.ann,
        n_ann,
        iso,
        [w0],
        [chosen.tau2_rel_iso],
        ctx.eig_cache(iso),
    )
    fitted = np.bincount(ctx.fit.ann, minlength=n_ann) > 0
    ids = np.asarray(people, np.int64)
    out = []
    for h in (0, 1):
        outside = fitted.copy()
        outside[ids[half == h]] = False
        deltas = (heads[0, 0] - w0)[outside]
        out.append(P.prior_with_directions(iso, deltas, gamma=chosen.gamma))
    return out, half
