"""``benchmarks/expected_gap.py``'s expectation over the test draw: the score
distribution it computes is the one ``taste_benchmark.draw_ratings`` samples
from, and its expected pairwise accuracy is what many draws average to."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def eg():
    sys.path.insert(0, str(BENCH))  # it imports taste_benchmark as a sibling
    try:
        spec = importlib.util.spec_from_file_location(
            "expected_gap_mod", BENCH / "expected_gap.py"
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
    return mod


@pytest.mark.parametrize("variant", ["linear", "scale_parts"])
def test_the_score_distribution_is_the_one_draw_ratings_samples(eg, variant):
    tb = eg.tb
    v = {**tb.variants_load([variant])[variant], "per_image": 1}
    seed, noise, u = 3, 0.7, 0.4
    util = np.full((1, 40_000), u)  # one rater, every image the same utility
    _, _, scores = tb.draw_ratings(v, util, noise, seed)
    offset, spread = tb.rater_scales(v, 1, np.random.default_rng(seed + 1))
    pmf = eg.level_pmf(v, np.array([u]), offset[0], spread[0], noise)[0]
    lo, hi = v["scale"]
    seen = np.bincount((scores - lo).astype(int), minlength=hi - lo + 1) / scores.size
    assert pmf.sum() == pytest.approx(1.0)
    assert np.abs(seen - pmf).max() < 0.01  # 40,000 draws: sd of each ≤ 0.0025


def test_expected_accuracy_is_what_many_draws_average_to(eg):
    rng = np.random.default_rng(5)
    n, levels = 7, 5
    pmf = rng.dirichlet(np.ones(levels), size=n)
    preds = np.column_stack([rng.normal(size=n), np.r_[0.0, 0.0, rng.normal(size=5)]])
    want = eg.expected_accuracy(pmf, preds)
    draws = 20_000
    cdf = np.cumsum(pmf, axis=1)
    s = (rng.random((draws, n, 1)) > cdf[None]).sum(axis=2)  # sampled levels
    dt = np.sign(s[:, :, None] - s[:, None, :])
    for m in range(preds.shape[1]):
        dp = np.sign(preds[:, m][:, None] - preds[:, m][None, :])
        agree = ((dt == dp) & (dt != 0)).sum() + 0.5 * ((dp == 0) & (dt != 0)).sum()
        assert want[m] == pytest.approx(agree / (dt != 0).sum(), abs=0.005)
    assert 0.0 < want.min() and want.max() < 1.0
