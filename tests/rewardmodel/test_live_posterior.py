"""The live newcomer path's incremental posterior (``posterior.LivePosterior``)
equals the closed form computed from scratch (issue 28, issue 26's "the update
costs ≤ 5 ms"): after every step of a random sequence of ratings, fed one at a
time and in blocks, its head equals the dual form's (``user_delta``,
``taste.adapted_head``) and its spread equals ``HeadSpread``'s."""

import numpy as np
import pytest

from rewardmodel import posterior as P
from rewardmodel import taste as T


def _prior(rng, d, *, rho=1.0, lowrank=True):
    diag = rng.uniform(0.5, 2.0, d).astype(np.float32)
    diag[-2] = rho
    lr = rng.normal(size=(d, 3)).astype(np.float32) if lowrank else None
    return P.Prior(diag, lr, 0.7 if lowrank else 1.0)


def _dual(f, y_raw, base, prior, tau2, fallback_std):
    """The closed form written out in float64: the annotator's mean and std,
    δ = τ²DFᵀ(τ²K + I)⁻¹r, and the covariance τ²D − τ⁴DFᵀ(τ²K + I)⁻¹FD."""
    r = T.Ratings(np.zeros(y_raw.size, np.int64), np.zeros(y_raw.size, np.int64), y_raw)
    m, s = T.norm_stats(r, 1, fallback_std=fallback_std)
    f = f.astype(np.float64)
    dense = prior.dense()
    resid = (y_raw - m[0]) / s[0] - f @ base
    a = tau2 * f @ dense @ f.T + np.eye(len(f))
    delta = tau2 * dense @ f.T @ np.linalg.solve(a, resid)
    fd = f @ dense
    cov = tau2 * dense - tau2**2 * fd.T @ np.linalg.solve(a, fd)
    return delta, cov, float(m[0]), float(s[0])


def _features(rng, n, k):
    x = rng.normal(size=(n, k)).astype(np.float32)
    return T.Features.full(x, rng.normal(size=n).astype(np.float32))


@pytest.mark.parametrize(
    "k, n, rho, lowrank",
    [(6, 40, 1.0, True), (12, 300, 0.3, True), (5, 30, 0.0, False)],
    ids=["n>d", "n>block", "singular-prior"],
)
def test_incremental_equals_from_scratch_over_a_random_sequence(k, n, rho, lowrank):
    rng = np.random.default_rng(k * 1000 + n)
    d = k + 2
    prior = _prior(rng, d, rho=rho, lowrank=lowrank)
    base = rng.normal(size=d)
    tau2, fallback = 0.9, 1.3
    f = _features(rng, n, k)
    y = rng.integers(1, 8, size=n).astype(np.float64)
    g = _features(rng, 9, k)
    live = P.LivePosterior.start(prior, tau2, base)
    assert np.allclose(live.sd(g), P.HeadSpread.build(f[:0], tau2, prior).sd(g))
    done = 0
    while done < n:  # mostly one rating at a time, sometimes a block
        step = int(rng.choice([1, 1, 1, 2, 5, P.BLOCK + 3]))
        live.add(f[done : done + step], y[done : done + step])
        done = min(done + step, n)
        delta, cov, m, s = _dual(f[:done], y[:done], base, prior, tau2, fallback)
        got = live.delta(m, s)
        assert np.allclose(got, delta, rtol=1e-8, atol=1e-10)
        assert np.allclose(live.cov, cov, rtol=1e-8, atol=1e-10)
        want_sd = P.HeadSpread.build(f[:done], tau2, prior).sd(g)
        assert np.allclose(live.sd(g), want_sd, rtol=1e-7, atol=1e-9)
        # The served adaptation (float32 decomposition): same head.
        head, m32, s32 = T.adapted_head(
            f[:done], y[:done], base=base, prior=prior, tau2=tau2, fallback_std=fallback
        )
        assert (m32, s32) == (m, s)
        assert np.allclose(base + got, head, rtol=1e-4, atol=1e-4)
    assert live.n == n and live.scores == y.tolist()


def test_one_rating_matters_and_order_does_not():
    rng = np.random.default_rng(7)
    d, n = 10, 25
    prior = _prior(rng, d)
    f, y = _features(rng, n, d - 2), rng.normal(4, 1.5, size=n)
    a = P.LivePosterior.start(prior, 0.5, np.zeros(d))
    b = P.LivePosterior.start(prior, 0.5, np.zeros(d))
    a.add(f, y)
    for i in rng.permutation(n):
        b.add(f[i], y[i : i + 1])
    assert np.allclose(a.cov, b.cov, atol=1e-10)
    assert np.allclose(a.delta(4.0, 1.5), b.delta(4.0, 1.5), atol=1e-10)
    before = a.delta(4.0, 1.5).copy()
    a.add(f[:1], np.array([7.0]))
    assert not np.allclose(a.delta(4.0, 1.5), before)


def test_no_personal_part_no_update():
    rng = np.random.default_rng(8)
    prior = _prior(rng, 6)
    live = P.LivePosterior.start(prior, 0.0, np.ones(6))
    live.add(_features(rng, 4, 4), np.arange(4.0))
    assert np.array_equal(live.delta(1.0, 1.0), np.zeros(6))
    assert np.array_equal(live.sd(_features(rng, 3, 4)), np.zeros(3))
