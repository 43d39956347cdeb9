"""``taste_benchmark.utilities``' crowd part: the expectation of each utility
over the annotator's own draws, which the "crowd ceiling" headroom column
scores. Checked against the mean over many annotators of one group, where the
own draws average out, with every personal part of the simulator switched on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "taste_benchmark.py"


@pytest.fixture(scope="module")
def tb():
    spec = importlib.util.spec_from_file_location("taste_benchmark_mod", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _variant(tb, **over) -> dict:
    v = tb.variants_load(["linear"])["linear"]
    return {**v, "images": 120, **over}


def test_the_crowd_part_is_the_utility_when_nothing_is_personal(tb):
    v = _variant(tb, annotators=30, individual=0.0)
    emb, domains = tb.synthetic_embeddings(120, 1)
    util, _, crowd = tb.utilities(v, emb, domains, 5)
    assert np.allclose(util, crowd)


def test_the_crowd_part_is_the_mean_over_the_annotators_own_draws(tb):
    # One group, so every annotator shares the crowd part; the own draws
    # (direction, ideal point, domain preference, interaction coefficient)
    # average out over 6,000 of them.
    v = _variant(
        tb,
        annotators=6000,
        groups=1,
        ideal_point=1.2,
        domain=0.8,
        interaction=1.0,
    )
    emb, domains = tb.synthetic_embeddings(120, 2)
    util, _, crowd = tb.utilities(v, emb, domains, 9)
    assert np.allclose(crowd, crowd[0])  # the same for everyone in the group
    mean = util.mean(0)
    assert np.abs(mean - crowd[0]).max() < 0.1 * util.std()
    assert np.corrcoef(mean, crowd[0])[0, 1] > 0.99
