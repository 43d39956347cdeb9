"""Newcomers adapt with the τ² selected around *their* base (issue 26).

Selection chooses the seen annotators' configuration (base, ρ, τ²) and, apart,
the newcomers' base (their k = 0 prediction). A τ² fitted to the residuals
around one base can overfit around another, so the newcomers' τ² is the best
on val_seen among their own base's configurations at the chosen ρ wherever the
seen annotators' τ² does worse there than no adaptation at all.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from rewardmodel.selection import Config, _Search


def _search(scores: dict[Config, float], n_ann: int = 6) -> _Search:
    """A search whose val_seen accuracies are given (one value per annotator,
    every annotator alike), without fitting anything."""
    s = _Search.__new__(_Search)
    s.acc = {c: np.full(n_ann, v) for c, v in scores.items()}
    s.scores = {c.label: v for c, v in scores.items()}
    s.sc = SimpleNamespace(groups=[None] * n_ann)
    return s


@pytest.mark.parametrize(
    ("seen_tau2_there", "expected"),
    [
        (0.600, 0.0316),  # the seen τ² loses to τ² = 0 there: the best there
        (0.603, 0.316),  # it does not: kept, though 0.0316 scores higher
    ],
)
def test_the_newcomers_tau2_around_their_own_base(seen_tau2_there, expected):
    chosen = Config("crowd", 10.0, 0.316)
    search = _search(
        {
            chosen: 0.647,
            Config("crowd", 10.0, 0.0316): 0.640,
            Config("content", 10.0, 0.0): 0.602,
            Config("content", 10.0, 0.0316): 0.616,
            Config("content", 10.0, 0.316): seen_tau2_there,
            Config("content", 0.0, 1.0): 0.650,  # another ρ: not a candidate
            Config("content", 10.0, 3.16, 0.8): 0.700,  # a γ prior: not either
        }
    )
    assert search.tau2_around("content", chosen) == expected
    assert search.tau2_around("crowd", chosen) == 0.316  # the chosen base


def test_no_adaptation_where_every_tau2_loses_around_that_base():
    chosen = Config("crowd", 0.0, 0.1)
    search = _search(
        {
            chosen: 0.66,
            Config("content", 0.0, 0.0): 0.62,
            Config("content", 0.0, 0.1): 0.61,
            Config("content", 0.0, 1.0): 0.58,
        }
    )
    assert search.tau2_around("content", chosen) == 0.0
    # Never searched around that base: nothing says the chosen τ² is wrong.
    assert search.tau2_around("crowd_only", chosen) == 0.1
