"""The blend of the family's members (``stacking``): weights on the simplex
chosen by pairwise accuracy, a useless member left out, and the blend of
members that err differently better than each."""

import numpy as np

from rewardmodel import metrics as M
from rewardmodel import stacking as S


def test_members_that_err_differently_blend_better_than_each():
    rng = np.random.default_rng(0)
    n_ann, per = 60, 20
    ann = np.repeat(np.arange(n_ann), per)
    truth = rng.normal(size=ann.size)
    a = truth + rng.normal(size=ann.size)  # two noisy views of the same taste
    b = 3.0 * (truth + rng.normal(size=ann.size))  # on another scale
    junk = rng.normal(size=ann.size)
    p = np.stack([a, b, junk, np.zeros(ann.size)], axis=1)
    w, acc = S.choose_weights(p, truth, ann)
    assert w[2] == 0 and w[3] == 0  # noise and a constant get nothing
    assert w[0] > 0 and w[1] > 0
    single = [M.mean_pairwise(ann, truth, p[:, j]) for j in range(2)]
    assert np.isclose(acc, M.mean_pairwise(ann, truth, p @ w))
    assert acc > max(single)


def test_one_good_member_is_kept_alone():
    rng = np.random.default_rng(1)
    ann = np.repeat(np.arange(40), 15)
    truth = rng.normal(size=ann.size)
    p = np.stack([truth, rng.normal(size=ann.size)], axis=1)
    w, acc = S.choose_weights(p, truth, ann)
    assert w[1] == 0 and acc == 1.0
    assert np.isclose(w[0], 1.0)  # least-squares scale of an exact member


def test_simplex_covers_the_members_and_sums_to_one():
    grid = S.simplex(4)
    assert grid.shape == (286, 4)
    assert np.allclose(grid.sum(1), 1.0) and (grid >= 0).all()
    assert {tuple(w) for w in grid[:4]} == {tuple(w) for w in np.eye(4)}
