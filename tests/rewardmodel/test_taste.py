"""The model family nests its baselines, and the grid solver is the plain solver.

Numpy only (no database): these guard the algebra that lets selection fall back to
a baseline exactly and lets a newcomer's prediction start at the newcomer base."""

import numpy as np
import pytest

from rewardmodel import metrics as M
from rewardmodel import posterior as P
from rewardmodel import taste as T


def _features(seed=0, n=300, dim=12, n_ann=9):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    crowd = rng.normal(size=n).astype(np.float32)
    f = T.Features.full(x, crowd)
    ann = rng.integers(0, n_ann, size=n)
    y = (x @ rng.normal(size=dim) + 0.7 * crowd + rng.normal(size=n)).astype(np.float32)
    return f, y, ann, n_ann


def test_heads_grid_equals_one_head_at_a_time():
    f, y, ann, n_ann = _features()
    prior = P.prior_with_directions(
        P.prior_diag(f.shape[1] - 2, 10.0),
        np.random.default_rng(1).normal(size=(n_ann, f.shape[1])),
        gamma=0.5,
        rank=3,
    )
    gram, rhs = T.gram_of(f, y)
    bases = [T.base_head(gram, rhs, b, 0.1) for b in T.BASES]
    taus = [0.0, 0.1, 3.0]
    grid, kscale = P.heads_grid(f, y, ann, n_ann + 2, prior, bases, taus)
    assert grid.shape == (len(bases), len(taus), n_ann + 2, f.shape[1])
    for bi, base in enumerate(bases):
        for ti, tau in enumerate(taus):
            for a in range(n_ann):  # the one-head solver, annotator by annotator
                idx = np.flatnonzero(ann == a)
                uk = P.user_kernel(f[idx], y[idx] - f[idx] @ base, prior)
                delta = P.user_delta(uk, tau * kscale, prior)
                np.testing.assert_allclose(
                    grid[bi, ti, a], base + delta, rtol=2e-4, atol=2e-5
                )
    # Annotators without ratings keep the base; τ = 0 is the base exactly.
    assert np.array_equal(grid[:, :, n_ann], np.stack([bases] * len(taus), 1))
    assert np.array_equal(grid[2, 0], np.tile(bases[2], (n_ann + 2, 1)))


def test_bases_are_the_baselines_forms():
    f, y, _, _ = _features()
    gram, rhs = T.gram_of(f, y)
    content = T.base_head(gram, rhs, "content", 0.3)
    assert content[-2] == 0.0  # no crowd weight: the population baseline's form
    crowd_only = T.base_head(gram, rhs, "crowd_only", 0.3)
    assert not crowd_only[:-2].any() and crowd_only[-2] > 0
    assert not T.base_head(gram, rhs, "zero", 0.3).any()
    # Deterministic: the same choice gives the same head, bit for bit.
    assert np.array_equal(content, T.base_head(gram, rhs, "content", 0.3))
    with pytest.raises(ValueError, match="unknown base"):
        T.base_head(gram, rhs, "median", 0.3)


def test_newcomer_starts_at_the_newcomer_base_and_learns_with_k():
    rng = np.random.default_rng(3)
    dim = 10
    x = rng.normal(size=(400, dim)).astype(np.float32)
    f = T.Features.full(x, np.zeros(400, np.float32))
    w0 = np.zeros(dim + 2)
    w_new = np.r_[rng.normal(size=dim), 0.0, 0.0]
    taste = rng.normal(size=dim)
    y = 4 + x @ taste + rng.normal(0, 0.3, size=400)
    model = T.Model(
        feat=None,
        w0=w0,
        heads=np.zeros((0, dim + 2), np.float32),
        fitted=np.zeros(0, bool),
        norm_mean=np.zeros(0),
        norm_std=np.ones(0),
        hyper=T.Hyper(pop_lambda=1.0, tau2_rel=1.0, rho=0.0, new_tau2_rel=1.0),
        kscale=1.0 / dim,
        global_std=1.0,
        w_new=w_new,
    )
    head, _, _ = model.adapt(f[:0], y[:0])
    assert np.array_equal(head, w_new.astype(np.float32))  # k = 0: the base
    fixed, _, _ = model.adapt(f[:20], y[:20], tau2_rel=0.0)
    assert np.array_equal(fixed, w_new.astype(np.float32))  # τ = 0: the base

    def corr(k):
        h, _, _ = model.adapt(f[:k], y[:k])
        return np.corrcoef(x[200:] @ h[:-2], x[200:] @ taste)[0, 1]

    assert corr(5) < corr(20) < corr(120)
    assert corr(120) > 0.95


def test_pair_scorer_is_pairwise_accuracy_per_annotator():
    from rewardmodel.metrics import pairwise_accuracy

    rng = np.random.default_rng(5)
    ann = rng.integers(0, 6, size=90)
    ann[ann == 5] = 4  # annotator 5 has no ratings
    y = rng.integers(1, 6, size=90).astype(float)
    y[ann == 3] = 2.0  # annotator 3 gave one score only: no untied pair
    preds = np.c_[rng.normal(size=90), np.rint(rng.normal(size=90)), np.zeros(90)]
    sc = M.PairScorer(ann, y)
    acc = sc.of_matrix(preds)
    assert list(sc.annotators) == [0, 1, 2, 4]
    for i, a in enumerate(sc.annotators):
        for c in range(preds.shape[1]):
            assert acc[i, c] == pairwise_accuracy(y[ann == a], preds[ann == a, c])
    assert np.all(acc[:, 2] == 0.5)  # a constant predictor: ties count half
    empty = M.PairScorer(ann[:0], y[:0])
    assert empty.of_matrix(preds[:0]).shape == (0, 3)


def test_global_std_with_nobody_rating_twice_is_one_not_nan():
    """The typical spread behind a newcomer's few ratings: the median std of
    annotators with two or more ratings; with none of them 1.0 (a median of
    nothing is NaN, and NaN made every newcomer's prediction NaN)."""
    std = np.array([0.5, 2.0, 1.1])
    assert T.global_std(std, np.array([3, 1, 5])) == pytest.approx(0.8)
    assert T.global_std(std, np.array([1, 1, 0])) == 1.0
    assert T.global_std(std[:0], np.zeros(0, np.int64)) == 1.0
    # Through the fit: one rating per annotator.
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(6, 5))
    fit = T.Ratings(np.arange(6), np.arange(6), rng.integers(1, 8, 6).astype(float))
    hyper = T.Hyper(pop_lambda=1.0, tau2_rel=1.0, rho=0.0)
    model = T.fit_heads(emb=emb, fit=fit, n_ann=6, hyper=hyper)
    assert model.global_std == 1.0
    x = model.feat.x(emb)
    head, _, std1 = model.adapt(T.Features.full(x[:1], np.zeros(1)), np.array([4.0]))
    assert np.isfinite(head).all() and np.isfinite(std1)


def test_hyper_reads_the_old_tau_names_of_earlier_checkpoints():
    """``tau`` and friends were relative τ²; checkpoints written before the
    rename still load, into the new names."""
    old = {
        "pop_lambda": 0.3,
        "tau": 0.1,
        "rho": 10.0,
        "gamma": 0.8,
        "tau_iso": 0.3,
        "new_tau": 0.0,
        "ridge_tau": 3.0,
        "base": "crowd",
        "new_base": "content",
        "blend": [0.5, 0.0, 0.5, 0.0],
    }
    h = T.Hyper.from_dict(old)
    assert (h.tau2_rel, h.tau2_rel_iso, h.new_tau2_rel, h.ridge_tau2_rel) == (
        0.1,
        0.3,
        0.0,
        3.0,
    )
    assert T.Hyper.from_dict(h.as_dict()) == h
    assert "tau" not in h.as_dict() and h.as_dict()["tau2_rel"] == 0.1


def test_forward_is_features_times_head_in_every_form():
    """The one forward pass: one head, candidate heads, one head per annotator,
    and the cache form serving uses, all equal to [x, crowd, 1] · head."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 7))
    crowd = rng.normal(size=40)
    f = np.hstack([x, crowd[:, None], np.ones((40, 1))])
    heads = rng.normal(size=(5, 9))
    ann = rng.integers(0, 5, size=40)
    assert np.allclose(T.forward(x, crowd, heads[0]), f @ heads[0])
    assert np.allclose(T.forward(x, crowd, heads), f @ heads.T)
    assert np.allclose(T.forward(x, crowd, heads, ann), np.sum(f * heads[ann], 1))
    for rows in (np.array([3, 3, 9]), np.arange(40)[::-1]):  # gather / whole cache
        got = T.forward(x, crowd[rows], heads[1], rows=rows)
        assert np.allclose(got, f[rows] @ heads[1])
