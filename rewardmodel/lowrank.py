"""A pair-specific prior for the similar crowd's agreements (issue 26;
``evaluation.Data.similar`` as a (rank, λ, cross, everyone, cap) tuple).

``similar.Agreement`` shrinks each pair's raw agreement (the mean product of
their normalised fit ratings over the ~5 images both rated) toward one global
mean m. Here it is shrunk toward a prior of its own, predicted from low-rank
taste factors that use **all** of each annotator's fit ratings: a rank-k
factorisation z_ai ≈ u_a · v_i of the normalised fit ratings (alternating
ridge least squares over the rated cells only), the pair's predicted
agreement s_ab = u_a' G u_b with G the mean v v' over the rated images (the
mean over images of the reconstructions' product), calibrated by weighted
least squares over the co-rating pairs, prior_ab = c0 + c1 s_ab, and the
random-effects moments (σ², τ²) re-estimated around it. Pairs who never
co-rated keep ``Agreement.base``, as today (the served path's sparse sums),
unless ``everyone``.

Options (``crowd.Similar.fit``'s ``lowrank`` tuple), chosen on tuning seeds
0–3 (RESULTS.md "Issue 26: low-rank agreement prior"): calibrated in sample
(the pair's own co-ratings in both s_ab and its raw agreement: c1 rides on
their noise, τ² around the prior came out 0 and ``noisy_idiosyncratic``
lost) or **cross-fitted** (``cross_fitted``: factors of one half of the
images against raw agreements on the other); **capped** (c1 ≥ 0, the
prior's spread ≤ the pairs' τ²; without it ``consensus_heavy``, where τ² is
0, got a negative c1). Training's default (``"similar": "lowrank"``, the
tuned setting) and ``"similar": [rank, λ, cross, 0, cap]`` serve the prior
(``with_prior`` on the deployed refit and promotion's comparison,
``PairPrior.arrays`` in the checkpoint, ``PairPrior.keyed`` for serving's
annotator keys); ``everyone`` is evaluation only.

Memory follows the ratings: (A, k) and (images, k) factors, per-cell
products, never an (A, A) or (A, images) array.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .similar import Agreement, mean_per_cell

ITERATIONS = 12


def _solve_rows(idx, f, z, n: int, lam: float) -> np.ndarray:
    """Per group g of ``idx`` (0..n-1), the ridge solution of z on the rows of
    ``f`` (cells, k) in the group; groups without cells get 0."""
    k = f.shape[1]
    gram = np.empty((n, k, k))
    for p in range(k):
        for q in range(p, k):
            col = np.bincount(idx, weights=f[:, p] * f[:, q], minlength=n)
            gram[:, p, q] = col
            gram[:, q, p] = col
    gram += lam * np.eye(k)
    rhs = np.stack(
        [np.bincount(idx, weights=f[:, p] * z, minlength=n) for p in range(k)], 1
    )
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def factors(ann, row, z, n_ann: int, n_rows: int, rank: int, lam: float):
    """(U (n_ann, rank), G (rank, rank)) of the normalised ratings ``z``
    (a repeated rating at its mean): alternating ridge least squares from a
    fixed-seed start (the same ratings give the same factors)."""
    a, r, zb = mean_per_cell(ann, row, z, max(n_rows, 1))
    rng = np.random.default_rng(0)
    v = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_rows, rank))
    u = np.zeros((n_ann, rank))
    for _ in range(ITERATIONS):
        u = _solve_rows(a, v[r], zb, n_ann, lam)
        v = _solve_rows(r, u[a], zb, n_rows, lam)
    rated = np.unique(r)
    g = v[rated].T @ v[rated] / max(rated.size, 1)
    return u, g


@dataclass(frozen=True)
class PairPrior(Agreement):
    """``Agreement`` whose prior mean is pair-specific: c0 + c1 u_a' G u_b
    (m, σ², the base weight of pairs who never co-rated, as ``Agreement``;
    τ²: the true agreements' spread around the prior)."""

    c0: float = 0.0
    c1: float = 0.0
    # (A, k) by the model's annotator index, (k, k): not in ==, compare them apart
    u: np.ndarray | None = field(default=None, compare=False)
    g: np.ndarray | None = field(default=None, compare=False)
    everyone: bool = False  # pairs who never co-rated: the prior, not the base
    config: tuple = ()  # the (rank, λ, cross, everyone, cap) it was fitted with
    # Annotator key -> row of ``u``, where keys are not the model's index
    # (serving: pks; promotion's comparison: its own indices). None: the index.
    key_index: dict | None = field(default=None, compare=False)

    def keyed(self, key_index: dict) -> PairPrior:
        return replace(self, key_index=key_index)

    def _rows(self, keys) -> np.ndarray:
        keys = np.asarray(keys, np.int64).reshape(-1)
        if self.key_index is None:
            return keys
        return np.fromiter(map(self.key_index.__getitem__, keys.tolist()), np.int64)

    def prior(self, a, b) -> np.ndarray:
        ua = self.u[self._rows(a)]
        ub = self.u[self._rows(b)]
        return self.c0 + self.c1 * np.einsum("pk,kl,pl->p", ua, self.g, ub)

    def arrays(self) -> dict:
        """What a checkpoint stores besides ``Agreement.as_array``."""
        return {
            "similar_prior": np.asarray([self.c0, self.c1, *self.config], np.float64),
            "similar_u": self.u,
            "similar_g": self.g,
        }

    @classmethod
    def from_arrays(cls, base: Agreement, arrays: dict) -> Agreement:
        """``base`` where the checkpoint has no prior (older ones, or today's)."""
        p = arrays.get("similar_prior")
        if p is None or not p.size:
            return base
        u, g = arrays["similar_u"], arrays["similar_g"]
        if u.ndim != 2 or g.shape != (u.shape[1], u.shape[1]) or p.size != 7:
            raise ValueError("similar prior: inconsistent shapes.")
        cfg = (int(p[2]), *(float(v) for v in p[3:]))
        return cls(
            base.m,
            base.sigma2,
            base.tau2,
            float(p[0]),
            float(p[1]),
            u,
            g,
            bool(p[5]),
            cfg,
        )

    def pair_posterior(self, a, b, n, prod) -> np.ndarray:
        prior = self.prior(a, b)
        if self.tau2 <= 0:
            return prior
        return prior + n * self.tau2 / (n * self.tau2 + self.sigma2) * (
            prod / n - prior
        )

    def weights_of(self, ann: int, who, n, prod) -> np.ndarray:
        a = np.full(np.asarray(who).size, int(ann))
        return np.maximum(self.pair_posterior(a, who, n, prod), 0.0)


def pair_prior(
    base: Agreement, keys, n, prod, u, g, n_ann: int, s=None, cap=False
) -> PairPrior:
    """``PairPrior`` from the co-rating pairs (``similar.pair_sums``: keys
    a · n_ann + b, counts, Σ products) and the factors; ``base`` (today's
    constants on the same pairs) gives m, σ² and τ². ``s``: the pairs'
    predicted agreements to calibrate on (default from ``u``, ``g``:
    in-sample). ``cap``: c1 ≥ 0 (agreeing factors cannot predict less
    agreement) and the prior's spread over the pairs at most ``base.tau2``
    (a predictor of the true agreements cannot vary more than they do; τ² ≤ 0
    gives the plain mean, as ``Agreement``), c0 then keeping the n-weighted
    mean at m."""
    a, b = keys // n_ann, keys % n_ann
    if s is None:
        s = np.einsum("pk,kl,pl->p", u[a], g, u[b])
    raw = prod / n
    x = np.stack([np.ones_like(s), s], 1)
    sw = np.sqrt(n)
    coef, *_ = np.linalg.lstsq(x * sw[:, None], raw * sw, rcond=None)
    if cap:
        sbar = float((n * s).sum() / n.sum())
        spread = coef[1] ** 2 * float((n * (s - sbar) ** 2).sum() / n.sum())
        c1 = max(float(coef[1]), 0.0)
        if spread > max(base.tau2, 0.0):
            c1 *= np.sqrt(max(base.tau2, 0.0) / spread)
        coef = np.asarray([base.m - c1 * sbar, c1])
    resid = raw - x @ coef
    tot = float(n.sum())
    ss = float((n * resid**2).sum())
    denom = tot - float((n**2).sum()) / tot
    tau2 = (ss - (n.size - 2) * base.sigma2) / denom if denom > 0 else 0.0
    return PairPrior(base.m, base.sigma2, tau2, float(coef[0]), float(coef[1]), u, g)


def weight_row(key: int, train, agreement: PairPrior) -> np.ndarray:
    """(A,) weights of everyone for annotator ``key`` (``PairPrior.everyone``):
    the floored prior, the posterior for their co-raters, ``base`` for
    annotators without fit ratings, 0 for themselves. O(A k) per annotator."""
    n_ann = agreement.u.shape[0]
    w = np.full(n_ann, agreement.base)
    fitted = np.fromiter(train.mine.keys(), np.int64)
    if int(key) in train.mine:
        a = np.full(fitted.size, int(key))
        w[fitted] = np.maximum(agreement.prior(a, fitted), 0.0)
        who, post = train.agreements(key, agreement)
        w[who] = post
    w[int(key)] = 0.0
    return w


def flat(crowd) -> tuple:
    """(rows, annotator keys, z) of every rating ``crowd`` holds."""
    own = [(r, np.full(r.size, k), z) for k, (r, z) in crowd.own.items()]
    if not own:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate([o[c] for o in own]) for c in range(3))


def weighted_sums_all(crowd, flat_crowd, w: np.ndarray) -> tuple:
    """``similar.weighted_sums`` with a weight for everyone: two bincounts
    over the crowd's ratings (O(ratings) per annotator)."""
    rows, keys, z = flat_crowd
    n = crowd.sums.size
    wk = w[keys]
    return (
        np.bincount(rows, weights=wk * z, minlength=n),
        np.bincount(rows, weights=wk, minlength=n),
    )


def cross_fitted(
    base: Agreement, ann, row, z, n_ann: int, n_rows: int, rank, lam, cap=False
):
    """``PairPrior`` with the full fit's factors but c0, c1 and τ² calibrated
    honestly: factors from the images of one half (by row parity), pairs'
    raw agreements from the other half's co-ratings, both ways round (so a
    pair's own noise is not in the prediction it is compared with)."""
    from .similar import pair_sums

    u, g = factors(ann, row, z, n_ann, n_rows, rank, lam)
    parts = []
    for h in (0, 1):
        mine = np.asarray(row) % 2 == h
        uh, gh = factors(ann[mine], row[mine], z[mine], n_ann, n_rows, rank, lam)
        sums = pair_sums(ann[~mine], row[~mine], z[~mine], n_ann, n_rows)
        if sums is None:
            continue
        a, b = sums[0] // n_ann, sums[0] % n_ann
        parts.append((*sums[:3], np.einsum("pk,kl,pl->p", uh[a], gh, uh[b])))
    if not parts:
        full = _full(ann, row, z, n_ann, n_rows)
        return pair_prior(base, *full, u, g, n_ann, cap=cap)
    keys, n, prod, s = (np.concatenate([q[c] for q in parts]) for c in range(4))
    return pair_prior(base, keys, n, prod, u, g, n_ann, s=s, cap=cap)


def _full(ann, row, z, n_ann, n_rows):
    from .similar import pair_sums

    return pair_sums(ann, row, z, n_ann, n_rows)[:3]


def with_prior(model, fit, n_rows: int, config):
    """The fitted ``model`` (``taste.fit_heads`` on ``fit``) with its similar
    crowd's agreements under the prior (``config``: the training config's
    ``similar`` list), refitted on the same fit ratings as the heads; the model
    as it is without the member or without a config."""
    if not isinstance(config, tuple) or model.similar is None:
        return model
    from .crowd import Similar

    y = (fit.score - model.norm_mean[fit.ann]) / model.norm_std[fit.ann]
    sim = Similar.fit(fit, y, model.norm_mean.size, n_rows, config)
    agree = sim.agreement
    if isinstance(agree, PairPrior):
        agree = replace(agree, config=(*config, 0, 0, 0)[:5])
    return replace(model, similar=agree)
