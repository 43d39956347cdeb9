"""The similarity-weighted consensus (``crowd.Similar``, issue 26 experiment):
raters who agreed with a person on the train images weigh more in the crowd
that predicts them; agreements come from the train ratings only (garbage in
validation or test ratings leaves them, and selection with the member, as they
were); without any co-rated pair it is the plain leave-one-out mean; the
person's own rating never enters their prediction."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rewardmodel import evaluation as V
from rewardmodel import selection as Sel
from rewardmodel import taste as T
from rewardmodel import training as TR
from rewardmodel.crowd import Crowd, Similar, similar_of
from rewardmodel.metrics import mean_pairwise
from rewardmodel.threads import compute_threads
from tests.rewardmodel.test_learning import planted

ROOT = Path(__file__).resolve().parents[2]


def _two_camps(seed=0, n_ann=40, n_img=300, per=10, camps=2):
    """Two camps of raters with opposite tastes (u and −u), ratings with noise
    (``camps`` 1: everyone in the first)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n_img)
    camp = np.arange(n_ann) % camps
    rows, anns = [], []
    for i in range(n_img):
        rows += [i] * per
        anns += rng.choice(n_ann, per, replace=False).tolist()
    rows, anns = np.asarray(rows), np.asarray(anns)
    truth = np.where(camp[anns] == 0, u[rows], -u[rows])
    z = truth + 0.7 * rng.normal(size=rows.size)
    return T.Ratings(rows, anns, z), z, camp, truth


def test_raters_who_agreed_weigh_more_and_predict_better_than_the_plain_mean():
    r, z, camp, truth = _two_camps()
    fit = r.take(r.row < 200)  # agreements from these images only
    sim = Similar.fit(fit, z[r.row < 200], 40, 300)
    same = camp[:, None] == camp[None, :]
    off = ~np.eye(40, dtype=bool)
    assert sim.info["tau2"] > 0
    assert sim.weights[same & off].mean() > 5 * sim.weights[~same].mean()
    assert (sim.weights >= 0).all() and not np.diag(sim.weights).any()
    held = r.row >= 200  # predicted from the others' ratings of new images
    crowd = Crowd.build(r, z, 300)
    q = r.take(held)
    weighted = sim.predict(crowd, q)
    plain = crowd.others_mean(q)
    assert mean_pairwise(q.ann, truth[held], weighted) > 0.75
    assert mean_pairwise(q.ann, truth[held], weighted) > (
        mean_pairwise(q.ann, truth[held], plain) + 0.2
    )


def test_without_co_rated_pairs_it_is_the_plain_leave_one_out_mean():
    r, z, _, _ = _two_camps(seed=1)
    first = np.zeros(len(r), bool)  # one rater per image in the fit ratings
    first[np.unique(r.row, return_index=True)[1]] = True
    sim = Similar.fit(r.take(first), z[first], 40, 300)
    assert sim.info["pairs"] == 0 and not sim.weights.any()
    crowd = Crowd.build(r, z, 300)
    assert np.array_equal(sim.predict(crowd, r), crowd.others_mean(r))


def test_own_rating_never_enters_the_prediction():
    r, z, _, _ = _two_camps(seed=2, camps=1)  # everyone agrees: weights > 0
    sim = Similar.fit(r, z, 40, 300)
    assert sim.weights[0, 1:].min() > 0
    base = sim.predict(Crowd.build(r, z, 300), r)
    z2 = z.copy()
    z2[0] += 50.0  # the first rating's own score
    moved = sim.predict(Crowd.build(r, z2, 300), r)
    # left out by subtraction from the image's sums (as the crowd feature):
    # equal up to rounding, where a rating of +50 kept in would move it by ~1
    assert abs(moved[0] - base[0]) < 1e-9
    others = (r.row == r.row[0]) & (np.arange(len(r)) != 0)
    assert not np.allclose(moved[others], base[others])  # it is others' crowd


def _noisy(snap, codes, seed=5):
    noisy = SimpleNamespace(**vars(snap))
    hit = np.isin(snap.r_split, codes)
    noisy.r_score = snap.r_score.copy()
    noisy.r_score[hit] = np.random.default_rng(seed).integers(1, 8, int(hit.sum()))
    return noisy


def _data(snap, emb, *, similar=True):
    data = TR._data(snap, emb, {**TR.DEFAULT_CONFIG, "seed": 12})
    data.similar = similar
    return data


def test_agreements_are_read_from_train_ratings_only():
    """Selection's and the report's contexts see validation (and the report
    test) ratings in their crowd; the agreements must not: garbage in every
    validation and test score leaves them bit for bit, garbage in train moves
    them (so the comparison can fail)."""
    snap, emb = planted(12)
    clean = _data(snap, emb)
    ref = similar_of(Sel.selection_context(clean)).weights
    report_ctx = V.Context(clean, clean.part("train"), clean.ratings)
    assert np.array_equal(similar_of(report_ctx).weights, ref)
    held = [V.CODES[s] for s in ("val_seen", "val_unseen", "test_seen", "test_unseen")]
    for codes, same in ((held, True), ([V.CODES["train"]], False)):
        data = _data(_noisy(snap, codes), emb)
        got = similar_of(Sel.selection_context(data)).weights
        assert np.array_equal(got, ref) is same
        ctx = V.Context(data, data.part("train"), data.ratings)
        assert np.array_equal(similar_of(ctx).weights, ref) is same


def test_selection_with_the_member_never_reads_test():
    """With the fifth member, garbage in every test score leaves the selected
    hyper-parameters, the member's weights and the blend's record as they were;
    garbage in validation scores moves them."""
    snap, emb = planted(12)
    with compute_threads():
        hyper, _, sel = Sel.select(_data(snap, emb))
    assert hyper.blend_similar is not None and len(hyper.blend) == 4
    assert "similar" in sel["blend"]["weights"]
    for codes, same in (
        ([V.CODES["test_seen"], V.CODES["test_unseen"]], True),
        ([V.CODES["val_seen"]], False),
    ):
        with compute_threads():
            h2, _, s2 = Sel.select(_data(_noisy(snap, codes), emb))
        assert (s2["blend"] == sel["blend"]) is same
        assert (h2 == hyper) is same
        if same:
            assert np.array_equal(h2.blend_similar, hyper.blend_similar)


def test_the_report_adds_the_member_to_seen_annotators_only():
    """A zero weight is main's report bit for bit; a positive one changes the
    model's test_seen predictions and no newcomer's."""
    snap, emb = planted(11)
    data = _data(snap, emb, similar=False)
    with compute_threads():
        hyper, prior, _ = Sel.select(data)
        tuned = Sel.tune_baselines(data)
        _, rows, _ = V.report(data, hyper, tuned, prior)
        zero = replace(hyper, blend_similar=np.zeros(data.n_ann))
        _, rows0, _ = V.report(data, zero, tuned, prior)
        some = replace(hyper, blend_similar=np.full(data.n_ann, 0.5))
        _, rows1, _ = V.report(data, some, tuned, prior)
    assert rows0 == rows
    seen = [i for i, r in enumerate(rows) if r["split"] == "seen"]
    assert seen and all(rows1[i] != rows[i] for i in seen)
    assert all(rows1[i] == rows[i] for i in range(len(rows)) if i not in seen)


@pytest.mark.slow
def test_benchmark_pairs_the_member_against_main(tmp_path):
    """``taste_benchmark.py --paired similar`` at a tiny size runs to its end."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "taste_benchmark.py")]
        + ["--variants", "linear", "--backbones", "synthetic", "--seeds", "1"]
        + ["--images", "60", "--annotators", "20", "--cache", str(tmp_path)]
        + ["--paired", "similar"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on − off" in proc.stdout and "1 runs," in proc.stdout
