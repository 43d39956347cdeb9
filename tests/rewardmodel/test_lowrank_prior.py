"""The low-rank agreement prior of the similar crowd (``rewardmodel.lowrank``,
issue 26 experiment behind ``taste_benchmark.py --paired lowrank``): factors
and agreements from the train ratings only (garbage in validation or test
scores leaves them bit for bit), the same ratings give the same factors, and
on two opposed camps the prior separates them where a pair's own co-ratings
are too few to."""

import numpy as np
import pytest

from rewardmodel import evaluation as V
from rewardmodel import lowrank as LR
from rewardmodel import selection as Sel
from rewardmodel import taste as T
from rewardmodel.crowd import Crowd, Similar, similar_of
from rewardmodel.metrics import mean_pairwise
from rewardmodel.similar import Agreement
from tests.rewardmodel.test_learning import planted
from tests.rewardmodel.test_similar_crowd import _data, _noisy, _two_camps
from tests.rewardmodel.test_training_memory import peak_bytes, sparse_study

LOW = (3, 1.0)


def test_factors_are_deterministic_and_recover_two_camps():
    r, z, camp, _ = _two_camps(seed=3, per=4)  # ~1 co-rating per pair
    u, g = LR.factors(r.ann, r.row, z, 40, 300, *LOW)
    u2, g2 = LR.factors(r.ann, r.row, z, 40, 300, *LOW)
    assert np.array_equal(u, u2) and np.array_equal(g, g2)
    s = u @ g @ u.T
    same = camp[:, None] == camp[None, :]
    off = ~np.eye(40, dtype=bool)
    assert s[same & off].mean() > 0.2 > -0.2 > s[~same].mean()


def test_the_prior_predicts_better_than_shrinking_toward_one_mean():
    r, z, camp, truth = _two_camps(seed=4, per=4)
    fit = r.row < 200
    plain = Similar.fit(r.take(fit), z[fit], 40, 300)
    low = Similar.fit(r.take(fit), z[fit], 40, 300, LOW)
    assert isinstance(low.agreement, LR.PairPrior) and low.info["c1"] > 0
    q = r.take(~fit)
    crowd = Crowd.build(r, z, 300)
    acc = [mean_pairwise(q.ann, truth[~fit], s.predict(crowd, q)) for s in (plain, low)]
    assert acc[1] > acc[0] + 0.03  # 0.729 against 0.686
    assert (low.weights >= 0).all() and not np.diag(low.weights).any()


@pytest.mark.parametrize("low", [LOW, (3, 1.0, 1, 1)], ids=["in_sample", "cross"])
def test_factors_and_agreements_are_read_from_train_ratings_only(low):
    """Garbage in every validation and test score leaves the prior's factors,
    constants and weights bit for bit in selection's and the report's
    contexts; garbage in train moves them (so the comparison can fail)."""
    snap, emb = planted(12)
    clean = _data(snap, emb, similar=low)
    ref = similar_of(Sel.selection_context(clean))
    assert isinstance(ref.agreement, LR.PairPrior)
    report_ctx = V.Context(clean, clean.part("train"), clean.ratings)
    assert np.array_equal(similar_of(report_ctx).weights, ref.weights)
    held = [V.CODES[s] for s in ("val_seen", "val_unseen", "test_seen", "test_unseen")]
    for codes, same in ((held, True), ([V.CODES["train"]], False)):
        data = _data(_noisy(snap, codes), emb, similar=low)
        for ctx in (
            Sel.selection_context(data),
            V.Context(data, data.part("train"), data.ratings),
        ):
            got = similar_of(ctx)
            assert np.array_equal(got.agreement.u, ref.agreement.u) is same
            assert (got.info == ref.info) is same
            assert np.array_equal(got.weights, ref.weights) is same


def test_memory_follows_the_ratings_at_ten_thousand_annotators():
    """10,000 annotators × 3,000 images, 30,000 ratings: the prior (factors,
    cross-fitted calibration) and predictions with a weight for everyone hold
    memory ~ ratings + (A, k); a dense (A, A) array alone would be 800 MB and
    (A, images) 240 MB."""
    snap, _ = sparse_study(0, n_img=3000, n_ann=10_000, per_image=10, dim=8)
    r = T.Ratings(snap.r_row, snap.r_ann, snap.r_score)
    z = (r.score - 4.0) / 1.5

    def run():
        sim = Similar.fit(r, z, 10_000, 3000, (4, 1.0, 1, 1))
        crowd = Crowd.build(r, z, 3000)
        return sim, sim.predict(crowd, r.take(r.ann < 20))

    peak, (sim, pred) = peak_bytes(run)
    assert sim.agreement.everyone and np.isfinite(pred).all()
    assert peak < 60e6, peak / 1e6


def test_the_checkpoint_keeps_the_prior_and_older_ones_load_without_it(tmp_path):
    """Training config ``similar: [rank, λ, cross, 0, cap]`` gives the deployed
    model the prior, refitted on every rating; the checkpoint stores what
    serving needs (factors, G, c0, c1, config) and gives it back; a checkpoint
    without those arrays (today's member, or older) loads with today's
    ``Agreement``; inconsistent arrays are refused."""
    from rewardmodel.checkpoint import checkpoint_load, checkpoint_save
    from rewardmodel.threads import compute_threads
    from rewardmodel.training import train_and_evaluate

    snap, emb = planted(14)
    with compute_threads():
        res = train_and_evaluate(
            snap=snap, emb=emb, cfg={"seed": 14, "similar": [3, 5.0, 1, 0, 1]}
        )
    model = res.model
    assert isinstance(model.similar, LR.PairPrior)
    assert model.similar.config == (3, 5.0, 1.0, 0.0, 1.0)
    assert model.similar.u.shape == (len(snap.annotator_keys), 3)
    keys = snap.annotator_keys
    checkpoint_save(tmp_path / "m.npz", model=model, keys=keys, meta={})
    loaded, _, _ = checkpoint_load(tmp_path / "m.npz")
    assert loaded.similar == model.similar  # constants and config
    assert np.array_equal(loaded.similar.u, model.similar.u)
    assert np.array_equal(loaded.similar.g, model.similar.g)
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files}
    today = {k: v for k, v in arrays.items() if not k.startswith("similar_")}
    np.savez(tmp_path / "today.npz", **today)
    plain, _, _ = checkpoint_load(tmp_path / "today.npz")
    assert type(plain.similar) is Agreement and plain.similar.m == model.similar.m
    np.savez(tmp_path / "bad.npz", **dict(arrays, similar_g=np.ones((2, 2))))
    with pytest.raises(ValueError, match="inconsistent"):
        checkpoint_load(tmp_path / "bad.npz")
    np.savez(tmp_path / "rows.npz", **dict(arrays, similar_u=np.ones((2, 3))))
    with pytest.raises(ValueError, match="similar_u rows"):
        checkpoint_load(tmp_path / "rows.npz")
