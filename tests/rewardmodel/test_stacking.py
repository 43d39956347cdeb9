"""The blend of the family's members (``stacking``): non-negative weights by
least squares on per-annotator centred predictions, a useless member left
out, the blend of members that err differently better than each, and the best
member alone where the blend does not beat it out of fold."""

import numpy as np

from rewardmodel import metrics as M
from rewardmodel import stacking as S


def _members(seed, n_ann=80, per=20):
    rng = np.random.default_rng(seed)
    ann = np.repeat(np.arange(n_ann), per)
    truth = rng.normal(size=ann.size)
    return rng, ann, truth


def test_members_that_err_differently_blend_better_than_each():
    rng, ann, truth = _members(0, n_ann=60)
    a = truth + rng.normal(size=ann.size)  # two noisy views of the same taste
    b = 3.0 * (truth + rng.normal(size=ann.size))  # on another scale
    junk = rng.normal(size=ann.size)
    p = np.stack([a, b, junk, np.zeros(ann.size)], axis=1)
    w, acc = S.choose_weights(p, truth, ann)
    assert w[2] == 0 and w[3] == 0  # noise and a constant get nothing
    assert w[0] > 0 and w[1] > 0
    assert np.isclose(w[0], 3 * w[1], rtol=0.25)  # the same views, rescaled
    single = [M.mean_pairwise(ann, truth, p[:, j]) for j in range(2)]
    assert np.isclose(acc, M.mean_pairwise(ann, truth, p @ w))
    assert acc > max(single)


def test_one_good_member_is_kept_alone():
    rng, ann, truth = _members(1, n_ann=40, per=15)
    p = np.stack([truth, rng.normal(size=ann.size)], axis=1)
    w, acc = S.choose_weights(p, truth, ann)
    assert w[1] == 0 and acc == 1.0
    assert np.isclose(w[0], 1.0)  # least-squares scale of an exact member


def test_per_annotator_offsets_do_not_buy_weight():
    """A member that only knows each annotator's mean (useless for ranking
    within an annotator) gets nothing: the fit is on centred predictions."""
    rng, ann, truth = _members(2)
    offsets = rng.normal(0, 3, size=ann.max() + 1)
    y = truth + offsets[ann]
    p = np.stack([truth + rng.normal(size=ann.size), offsets[ann]], axis=1)
    w, _ = S.choose_weights(p, y, ann)
    assert w[0] > 0 and w[1] == 0


def test_the_blend_is_kept_only_where_it_beats_the_best_member_out_of_fold():
    rng, ann, truth = _members(3, n_ann=120)
    fold = (ann % 2) == 0
    consensus = truth + rng.normal(size=ann.size)
    # The model member: the consensus with more noise on top; nothing to add.
    worse = consensus + rng.normal(size=ann.size)
    noise = rng.normal(size=(ann.size, 2))
    p = np.column_stack([worse, noise[:, 0], noise[:, 1], consensus])
    check = S.nested_gain(p, truth, ann, fold)
    assert not check["keep_blend"], check
    w, _ = S.single_weights(p, truth, ann)
    assert np.flatnonzero(w).tolist() == [3]  # the consensus, alone
    # Two members with independent errors: the blend beats either, out of fold.
    other = truth + rng.normal(size=ann.size)
    p2 = np.column_stack([other, noise[:, 0], noise[:, 1], consensus])
    check2 = S.nested_gain(p2, truth, ann, fold)
    assert check2["keep_blend"] and check2["gain"] > 0, check2
