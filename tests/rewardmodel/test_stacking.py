"""The blend of the family's members (``stacking``): non-negative least
squares on per-annotator centred, standardised predictions, shrunk toward the
best single member by an amount chosen on nested folds; a useless member left
out, the blend of members that err differently better than each, and the best
member alone where blending only adds noise."""

import numpy as np
import pytest

from rewardmodel import metrics as M
from rewardmodel import stacking as S


def _views(seed, n_ann=60, per=20):
    rng = np.random.default_rng(seed)
    ann = np.repeat(np.arange(n_ann), per)
    truth = rng.normal(size=ann.size)
    return rng, ann, truth


def test_members_that_err_differently_blend_better_than_each():
    rng, ann, truth = _views(0)
    a = truth + rng.normal(size=ann.size)  # two noisy views of the same taste
    b = 3.0 * (truth + rng.normal(size=ann.size))  # on another scale
    junk = rng.normal(size=ann.size)
    p = np.stack([a, b, junk, np.zeros(ann.size)], axis=1)
    w, acc, alpha = S.choose_weights(p, truth, ann)
    assert w[3] == 0  # a constant gets nothing
    assert w[2] <= 0.05 * w[0]  # noise next to nothing
    assert w[0] > 0 and w[1] > 0 and (w >= 0).all()
    assert alpha > 0.5  # the nested folds see that blending pays
    single = [M.mean_pairwise(ann, truth, p[:, j]) for j in range(2)]
    assert np.isclose(acc, M.mean_pairwise(ann, truth, p @ w))
    assert acc > max(single)


def test_one_good_member_is_kept_alone():
    rng, ann, truth = _views(1, n_ann=40, per=15)
    p = np.stack([truth, rng.normal(size=ann.size)], axis=1)
    w, acc, _ = S.choose_weights(p, truth, ann)
    assert w[1] == 0 and acc == 1.0
    assert np.isclose(w[0], 1.0)  # least-squares scale of an exact member


def test_noise_members_add_nothing_so_alpha_stays_near_the_best_member():
    # Like tiny-clip: one member carries the consensus, the others are noise.
    rng, ann, truth = _views(2, n_ann=80, per=12)
    good = truth + 1.5 * rng.normal(size=ann.size)
    p = np.stack([good, rng.normal(size=ann.size), rng.normal(size=ann.size)], 1)
    out = S.choose_shrinkage(p, truth, ann)
    curve = np.asarray(out["curve"])
    assert curve.shape == S.SHRINK_GRID.shape
    w, acc, _ = S.choose_weights(p, truth, ann, alpha=out["alpha"])
    best = M.mean_pairwise(ann, truth, good)
    assert acc >= best - 0.01  # never far below the best member on its data
    assert w[0] >= 2 * w[1:].sum()


def test_shrinkage_path_goes_from_best_member_to_least_squares():
    rng, ann, truth = _views(3)
    p = np.stack(
        [truth + rng.normal(size=ann.size), truth + 2 * rng.normal(size=ann.size)], 1
    )
    path = S.shrink_path(p, truth, ann)
    assert path.shape == (2, S.SHRINK_GRID.size)
    assert (path >= 0).all()
    assert path[1, 0] == 0 and path[0, 0] > 0  # α = 0: the best member only
    sd = S._scales(p, ann)
    ls = S.ls_direction(p, truth, ann)
    assert np.allclose(ls.sum(), 1.0) and (ls >= 0).all()
    assert np.allclose(path[:, -1] * sd, ls)  # α = 1: the least-squares blend
    assert np.allclose((path * sd[:, None]).sum(0), 1.0)  # on standardised columns


def test_few_annotators_give_the_best_member():
    rng, ann, truth = _views(4, n_ann=S.MIN_BLEND_ANNOTATORS - 1, per=10)
    p = np.stack(
        [
            truth + 0.3 * rng.normal(size=ann.size),
            truth + 3 * rng.normal(size=ann.size),
        ],
        1,
    )
    out = S.choose_shrinkage(p, truth, ann)
    assert out["alpha"] == 0.0 and out["curve"] is None
    w, _, _ = S.choose_weights(p, truth, ann, alpha=out["alpha"])
    assert np.count_nonzero(w) == 1


def test_nnls_matches_unconstrained_when_positive_and_drops_negative():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(200, 3))
    b = a @ np.array([1.0, 2.0, 0.5]) + 0.01 * rng.normal(size=200)
    assert np.allclose(S.nnls(a, b), np.linalg.lstsq(a, b, rcond=None)[0])
    b2 = a @ np.array([1.0, -2.0, 0.5])
    w = S.nnls(a, b2)
    assert w[1] == 0 and (w >= 0).all() and w[0] > 0


@pytest.mark.parametrize("constant", [0.0, 3.0])
def test_all_constant_members_get_no_weight(constant):
    _, ann, truth = _views(6, n_ann=30, per=8)
    p = np.full((ann.size, 2), constant)
    w, _, _ = S.choose_weights(p, truth, ann)
    assert not w.any()


def test_best_member_is_soft_between_close_members_and_sharp_otherwise():
    rng, ann, truth = _views(7, n_ann=80, per=12)
    a = truth + rng.normal(size=ann.size)
    b = truth + rng.normal(size=ann.size)  # as good as a, errs differently
    bad = truth + 4 * rng.normal(size=ann.size)
    close = S.best_member(np.stack([a, b, bad], 1), truth, ann)
    assert np.isclose(close.sum(), 1.0) and close[2] == 0
    assert close[0] > 0 and close[1] > 0  # a mixture, not a coin toss
    sharp = S.best_member(np.stack([bad, truth, np.zeros(ann.size)], 1), truth, ann)
    assert np.allclose(sharp, [0.0, 1.0, 0.0])
