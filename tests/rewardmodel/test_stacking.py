"""The blend of the family's members (``stacking``): non-negative least
squares on per-annotator centred, standardised predictions, shrunk toward the
best single member only where nested folds over the images show it pays by
``SHRINK_Z`` standard errors; a useless member left out, the blend of members
that err differently better than each, and the best member alone where
blending only adds noise."""

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


def _twins(seed):
    """Two near-copies of one noisy view (their blend ≈ each) and a junk
    member: the nested-fold curve over α is flat within its noise."""
    rng = np.random.default_rng(seed)
    ann = np.repeat(np.arange(60), 10)
    truth, shared = rng.normal(size=ann.size), rng.normal(size=ann.size)
    twins = [truth + 1.5 * shared + 0.3 * rng.normal(size=ann.size) for _ in "ab"]
    return np.stack([*twins, rng.normal(size=ann.size)], 1), truth, ann


def test_alpha_is_the_least_squares_blend_unless_shrinking_wins_by_shrink_z_se():
    # Seed 6: the curve peaks at α = 0 (the best member) by less than
    # SHRINK_Z standard errors; the least-squares blend stays.
    out = S.choose_shrinkage(*_twins(6))
    assert out["best_alpha"] == 0.0 and 0 < out["gain"] < S.SHRINK_Z * out["se"]
    assert out["alpha"] == 1.0
    # Seed 7: α = 0.5 wins by more than SHRINK_Z standard errors and is kept.
    out = S.choose_shrinkage(*_twins(7))
    assert out["gain"] >= S.SHRINK_Z * out["se"] > 0
    assert out["alpha"] == out["best_alpha"] == 0.5


def _few_images(seed, n_img=16, n_ann=60):
    """Everyone rates the same few images; the first member is the crowd (a
    noisy view of the shared taste), the second a column constant per image
    that carries nothing, so its fit on these images is chance."""
    rng = np.random.default_rng(seed)
    img, ann = np.tile(np.arange(n_img), n_ann), np.repeat(np.arange(n_ann), n_img)
    shared = rng.normal(size=n_img)
    truth = shared[img] + rng.normal(size=img.size)
    crowd = shared[img] + rng.normal(size=img.size)
    return np.stack([crowd, rng.normal(size=n_img)[img]], 1), truth, ann, img


def test_the_folds_over_images_see_a_member_that_only_fits_these_images():
    # Halving the ratings (or the annotators) leaves both sides on the same
    # images, where the empty column's chance fit holds: α stays 1 in all but
    # one draw. Halving the images shows it, and on new images the blend it
    # gives ranks better.
    rows_alpha, img_alpha, gains = [], [], []
    for seed in range(12):
        p, y, ann, img = _few_images(seed)
        by_rows = S.choose_shrinkage(p, y, ann)["alpha"]
        by_images = S.choose_shrinkage(p, y, ann, img)["alpha"]
        rows_alpha.append(by_rows)
        img_alpha.append(by_images)
        p2, y2, ann2, _ = _few_images(1000 + seed, n_img=200)  # new images
        accs = [
            M.mean_pairwise(ann2, y2, p2 @ S.choose_weights(p, y, ann, a)[0])
            for a in (by_rows, by_images)
        ]
        gains.append(accs[1] - accs[0])
    assert sum(a < 1 for a in rows_alpha) <= 1
    assert sum(a < 1 for a in img_alpha) >= 6
    assert np.mean(gains) > 0 and min(gains) >= 0


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


# --- per-annotator weights shrunk toward the pooled ones ----------------------------


def _two_kinds(seed, n_ann=80, per=16, *, differ=True, noise=0.3):
    """Two members: one sees each annotator's own taste, the other the crowd's.
    With ``differ``, even annotators rate by their own taste and odd ones with
    the crowd (each has a different best member); else everyone rates by the
    same mixture of both."""
    rng = np.random.default_rng(seed)
    ann = np.repeat(np.arange(n_ann), per)
    own, crowd = rng.normal(size=ann.size), rng.normal(size=ann.size)
    even = (ann % 2 == 0) if differ else np.full(ann.size, 0.5)
    y = even * own + (1 - even) * crowd + noise * rng.normal(size=ann.size)
    p = np.stack(
        [
            own + 0.3 * rng.normal(size=ann.size),
            2.0 * (crowd + 0.3 * rng.normal(size=ann.size)),  # another scale
        ],
        axis=1,
    )
    return p, y, ann


def _share(w, sd):
    """Weight on the first member, of the standardised weights."""
    u = w * sd
    return u[..., 0] / u.sum(axis=-1)


def test_an_annotator_specific_best_member_gets_its_weight():
    p, y, ann = _two_kinds(0)
    pooled, _, _ = S.choose_weights(p, y, ann, alpha=1.0)
    who, w, info = S.per_annotator_weights(p, y, ann, pooled)
    assert info["ratio"] > 0  # the weights differ between people: τ² found
    assert (w >= 0).all() and w.shape == (80, 2)
    sd = S._scales(p, ann)
    pooled_share = _share(pooled, sd)
    shares = _share(w, sd)
    even = who % 2 == 0
    assert 0.3 < pooled_share < 0.7  # the pooled blend is a mixture
    assert shares[even].mean() > pooled_share + 0.25  # own-taste raters: own member
    assert shares[~even].mean() < pooled_share - 0.25  # crowd raters: the crowd's
    # On fresh ratings of the same people, their own weights rank better.
    q, z, ann2 = _two_kinds(1)
    mine = M.mean_pairwise(ann2, z, S.rowwise(q, ann2, who, w, pooled))
    assert mine > M.mean_pairwise(ann2, z, q @ pooled) + 0.05
    # and the out-of-fold choice sees it
    choice = S.choose_blend_mode(p, y, ann, alpha=1.0)
    assert choice["mode"] == "per_annotator" and choice["gain"] > 0, choice


def test_people_alike_keep_the_pooled_weights():
    p, y, ann = _two_kinds(2, differ=False)
    pooled, _, _ = S.choose_weights(p, y, ann, alpha=1.0)
    who, w, info = S.per_annotator_weights(p, y, ann, pooled)
    sd = S._scales(p, ann)
    # Little or no spread found: everyone's share within a few points of pooled.
    assert np.abs(_share(w, sd) - _share(pooled, sd)).max() < 0.1, info
    assert S.choose_blend_mode(p, y, ann, alpha=1.0)["mode"] == "global"


def test_few_ratings_shrink_harder_toward_the_pooled_weights():
    """The same people with 4 ratings move less from the pooled weights than
    with 32 (the shrinkage is driven by how many out-of-fold ratings they have)."""
    p, y, ann = _two_kinds(3, n_ann=80, per=32, noise=1.5)
    few_people = ann < 20
    rank = np.arange(ann.size) - np.searchsorted(ann, ann)
    keep = ~few_people | (rank < 4)  # annotators 0..19: 4 ratings each
    pooled, _, _ = S.choose_weights(p, y, ann, alpha=1.0)
    sd = S._scales(p, ann)
    _, full, info = S.per_annotator_weights(p, y, ann, pooled)
    _, few, _ = S.per_annotator_weights(p[keep], y[keep], ann[keep], pooled)
    assert info["ratio"] > 0
    moved = [np.abs((w[:20] - pooled) * sd).sum(axis=1).mean() for w in (few, full)]
    assert moved[0] < 0.7 * moved[1], moved


def test_blend_mode_global_and_bad_mode():
    assert S.choose_blend_mode(*_two_kinds(4, n_ann=10), alpha=1.0)["mode"] == "global"
    with pytest.raises(ValueError, match="blend mode"):
        S.blend_out_of_fold(None, pop=None, ridge=None, consensus=None, mode="nope")


def test_blend_heads_per_annotator_rows_equal_the_global_blend_of_that_row():
    rng = np.random.default_rng(5)
    model, ridge = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    pop, cons = rng.normal(size=6), rng.normal(size=6)
    w = rng.random((3, 4))
    got = S.blend_heads(w, model, pop, ridge, cons)
    for a in range(3):
        one = S.blend_heads(w[a], model, pop, ridge, cons)[a]
        assert np.allclose(got[a], one)
