"""The members' leave-one-out train predictions (``train_loo``) equal refits
without the rating, and per-annotator weights fitted on them are kept only
where they beat the global blend on val_seen."""

import numpy as np

from rewardmodel import posterior as P
from rewardmodel import stacking as S
from rewardmodel import taste as T
from rewardmodel import train_loo as L


def _features(rng, n, k=6):
    f = np.hstack([rng.normal(size=(n, k)), rng.normal(size=(n, 1)), np.ones((n, 1))])
    return f


def test_posterior_loo_equals_refitting_without_the_rating():
    rng = np.random.default_rng(0)
    n, k = 14, 6
    f = _features(rng, n, k)
    y = rng.normal(size=n)
    w0 = rng.normal(size=k + 2) * 0.3
    base = P.prior_diag(k, 0.7)
    # iso 0.5: exact in float32 (``Prior.primal`` scales the float32 diagonal)
    lowrank = P.Prior(base.diag, rng.normal(size=(k + 2, 2)), 0.5)
    for prior in (base, lowrank):
        for tau2 in (0.05, 1.3):
            got = L.posterior_loo(f, y, np.zeros(n, np.int64), prior, w0, tau2)
            for i in range(n):
                keep = np.arange(n) != i
                fk = f[keep]
                system = tau2 * prior.kernel(fk) + np.eye(n - 1)
                alpha = np.linalg.solve(system, y[keep] - fk @ w0)
                head = w0 + tau2 * prior.primal(fk, alpha)
                assert abs(got[i] - f[i] @ head) < 1e-8, (i, tau2)
    # τ² = 0: the base alone; a cached decomposition gives the same
    assert np.array_equal(
        L.posterior_loo(f, y, np.zeros(n, int), base, w0, 0.0), f @ w0
    )
    eig = np.linalg.eigh(base.kernel(f))
    r = y - f @ w0
    assert np.allclose(L.gp_loo(f, r, base, 0.4, eig), L.gp_loo(f, r, base, 0.4))


def test_population_ridge_loo_equals_refitting_without_the_rating():
    rng = np.random.default_rng(1)
    n, k = 40, 5
    f = _features(rng, n, k)
    y = f[:, :k] @ rng.normal(size=k) + rng.normal(size=n)
    gram, rhs = T.gram_of(f, y)
    for kind, lam in (("content", 0.3), ("crowd", 0.01), ("crowd_only", 1.0)):
        head = T.base_head(gram, rhs, kind, lam)
        keep, pen = L.base_penalty(gram, kind, lam)
        got = L.ridge_loo(f, y, gram, head, keep, pen)
        for i in range(n):
            fi = f[i : i + 1].astype(np.float64)
            g = gram - fi.T @ fi
            # the penalty keeps its scale (the deployed form's λ is relative
            # to the full data): refit with the same absolute penalty
            idx = np.flatnonzero(keep)
            sub = g[np.ix_(idx, idx)] + np.diag(pen[idx])
            w = np.zeros(k + 2)
            w[idx] = np.linalg.solve(sub, (rhs - fi[0] * y[i])[idx])
            assert abs(got[i] - fi[0] @ w) < 1e-8, (kind, i)


def _people(seed, n_ann=60, per_train=60, per_val=10, differ=True):
    """Two members; half the people follow the first, half the second."""
    rng = np.random.default_rng(seed)

    def draw(per):
        ann = np.repeat(np.arange(n_ann), per)
        own, crowd = rng.normal(size=(2, ann.size))
        mix = np.where(ann % 2 == 0, 0.9, 0.1) if differ else 0.5
        y = mix * own + (1 - mix) * crowd + 0.3 * rng.normal(size=ann.size)
        return np.stack([own, crowd], 1), y, ann

    return draw(per_train), draw(per_val)


def test_weights_fitted_on_train_loo_are_kept_only_where_they_win_on_val_seen():
    loo, val = _people(0)
    pooled, _, _ = S.choose_weights(*val, alpha=1.0)
    info, per = L.train_loo_part(val, pooled, loo)
    assert info["mode"] == "train_loo" and info["gain"] > 0.05, info
    who, w = per
    share = w[:, 0] / w.sum(axis=1)
    assert share[who % 2 == 0].mean() > 0.7 and share[who % 2 == 1].mean() < 0.3
    # people alike: nothing to gain, the global blend stays
    loo, val = _people(1, differ=False)
    pooled, _, _ = S.choose_weights(*val, alpha=1.0)
    info, per = L.train_loo_part(val, pooled, loo)
    assert info["mode"] == "global" and per is None, info
    forced, per = L.train_loo_part(val, pooled, loo, forced=True)
    assert forced["mode"] == "train_loo" and per is not None
