import math

import numpy as np
import pytest

from rewardmodel import metrics
from rewardmodel.adapt import adapt_taste


def test_pairwise_accuracy_drops_true_ties_and_halves_predicted_ties():
    # Truth 1,2,2,3: pairs with different truth: (0,1) (0,2) (0,3) (1,3) (2,3) -> 5
    # (the 2-2 pair is dropped). Prediction 0,1,3,3:
    # (0,1) ok, (0,2) ok, (0,3) ok, (1,3) ok, (2,3) tied -> 4.5 / 5
    assert metrics.pairwise_accuracy([1, 2, 2, 3], [0, 1, 3, 3]) == pytest.approx(0.9)
    # Fully reversed: 0; constant prediction: exactly 0.5.
    assert metrics.pairwise_accuracy([1, 2, 3], [3, 2, 1]) == 0.0
    assert metrics.pairwise_accuracy([1, 2, 3], [5, 5, 5]) == 0.5
    # No pair rated differently: undefined.
    assert metrics.pairwise_accuracy([4, 4, 4], [1, 2, 3]) is None
    assert metrics.pairwise_accuracy([4], [1]) is None


def test_rankdata_averages_ties():
    assert metrics.rankdata([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert metrics.rankdata([3, 1, 3, 3]).tolist() == [3.0, 1.0, 3.0, 3.0]


def test_spearman_with_ties_matches_hand_computation():
    # ranks x: 1, 2.5, 2.5, 4 ; ranks y: 1, 2, 3, 4
    # xc = -1.5, 0, 0, 1.5 ; yc = -1.5, -0.5, 0.5, 1.5
    # cov = 2.25 + 2.25 = 4.5 ; |xc|^2 = 4.5 ; |yc|^2 = 5 -> 4.5 / sqrt(22.5)
    expected = 4.5 / math.sqrt(22.5)
    assert metrics.spearman([1, 2, 2, 3], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(
        expected
    )
    assert metrics.spearman([1, 2, 3], [1, 1, 1]) is None


def test_pearson_and_mae():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # xc = -1,0,1 ; yc = -1/3,-1/3,2/3 -> cov = 1 ; |yc|^2 = 2/3 -> 1/sqrt(2*2/3)
    assert metrics.pearson([1, 2, 3], [1, 1, 2]) == pytest.approx(1 / math.sqrt(4 / 3))
    assert metrics.mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    assert metrics.mae([], []) is None


def test_mean_of_skips_missing():
    assert metrics.mean_of([0.5, None, 1.0, float("nan")]) == 0.75
    assert metrics.mean_of([None]) is None


def test_adapt_taste_recovers_a_planted_vector_and_falls_back_to_prior():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 4))
    u_true = np.array([1.0, -2.0, 0.5, 0.0])
    prior = np.array([0.3, 0.3, 0.3, 0.3])
    u = adapt_taste(z=z, residual=z @ u_true, prior=prior, ridge=1e-6)
    assert np.allclose(u, u_true, atol=1e-4)
    # k = 0: the prior (cold start); a huge ridge also stays at the prior.
    assert np.array_equal(
        adapt_taste(z=z[:0], residual=[], prior=prior, ridge=1.0), prior
    )
    far = adapt_taste(z=z, residual=z @ u_true, prior=prior, ridge=1e9)
    assert np.allclose(far, prior, atol=1e-4)


def test_leave_one_out_consensus_by_hand():
    from rewardmodel.data import Snapshot
    from rewardmodel.evaluation import _loo_consensus

    # a0 rates 1, 3 (z -1, +1); a1 rates 2, 6 (z -1, +1); a2 rates image 0 once
    # (one rating: mean 5, std 1, z 0).
    snap = Snapshot(
        image_ids=[10, 11],
        ext_item_rows={},
        n_rows=2,
        r_row=np.array([0, 1, 0, 1, 0]),
        r_ann=np.array([0, 0, 1, 1, 2]),
        r_score=np.array([1.0, 3.0, 2.0, 6.0, 5.0]),
        annotator_keys=["1", "2", "3"],
        demographics={},
        n_real_annotators=3,
    )
    loo = _loo_consensus(snap)
    # (a0, img0): mean of a1 (-1) and a2 (0); (a0, img1): a1 (+1) alone;
    # (a1, img0): a0 (-1), a2 (0); (a1, img1): a0 (+1); (a2, img0): a0, a1 (-1, -1).
    assert loo.tolist() == [-0.5, 1.0, -0.5, 1.0, -1.0]
