import math

import numpy as np
import pytest

from rewardmodel import metrics


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


def test_user_head_recovers_a_planted_vector_and_shrinks_to_the_population():
    from rewardmodel import posterior as P

    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 6)).astype(np.float32)  # 4 content + crowd + 1
    f[:, -1] = 1.0
    w_true = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 0.0])
    diag = P.prior_diag(4, 1.0)
    uk = P.user_kernel(f, f @ w_true, diag)
    assert np.allclose(P.user_delta(uk, 1e6, diag), w_true, atol=1e-3)
    # τ = 0 (or no ratings): nothing personal, the population head alone.
    assert np.array_equal(P.user_delta(uk, 0.0, diag), np.zeros(6))
    tiny = P.user_delta(uk, 1e-9, diag)
    assert np.abs(tiny).max() < 1e-5


def test_crowd_feature_leaves_the_annotators_own_rating_out():
    from rewardmodel import taste as T

    # Image 0 rated by three people (z -1, -1, 0), image 1 by two (+1, +1).
    r = T.Ratings(np.array([0, 1, 0, 1, 0]), np.array([0, 0, 1, 1, 2]), np.zeros(5))
    z = np.array([-1.0, 1.0, -1.0, 1.0, 0.0])
    crowd = T.Crowd.build(r, z, 2)
    # (a0, img0): the others sum to -1 over 2 raters -> -1 / (2 + 1).
    own = z.copy()
    assert np.allclose(
        crowd.feature(r.row, own), [-1 / 3, 1 / 2, -1 / 3, 1 / 2, -2 / 3]
    )
    # Not rated by this annotator: every rating counts.
    assert crowd.feature(np.array([1]), np.array([np.nan]))[0] == pytest.approx(2 / 3)
