"""The similar crowd as training stores and serving computes it
(``rewardmodel.similar``): one annotator's agreements read at predict time
from the fit ratings equal the rows of evaluation's (A, A) matrix
(``crowd.Similar``), so do the predictions, and the checkpoint carries what
serving needs (old checkpoints: the member off)."""

from dataclasses import replace

import numpy as np
import pytest

from rewardmodel import similar as S
from rewardmodel import taste as T
from rewardmodel.checkpoint import checkpoint_load, checkpoint_save
from rewardmodel.crowd import Crowd, Similar
from rewardmodel.threads import compute_threads
from tests.rewardmodel.test_learning import planted
from tests.rewardmodel.test_similar_crowd import _two_camps


@pytest.mark.parametrize("seed", [0, 3])
def test_sparse_agreements_and_predictions_equal_the_dense_ones(seed):
    r, z, _, _ = _two_camps(seed=seed)
    fit = r.row < 200
    # a repeated rating (counted once, at its mean, by both sides)
    rows = np.append(r.row[fit], r.row[0])
    anns = np.append(r.ann[fit], r.ann[0])
    zs = np.append(z[fit], z[0] + 1.0)
    dense = Similar.fit(T.Ratings(rows, anns, zs), zs, 40, 300)
    agree = S.agreement_fit(anns, rows, zs, 40, 300)
    assert agree.tau2 > 0 and dense.info["m"] == round(agree.m, 5)
    index = S.TrainIndex(anns, rows, zs, 300)
    crowd = Crowd.build(r, z, 300)
    want = dense.predict(crowd, r)
    for a in range(40):
        who, w = index.agreements(a, agree)
        row = np.full(40, agree.base)
        row[who], row[a] = w, 0.0
        assert np.allclose(row, dense.weights[a], rtol=0, atol=1e-12), a
        mine = r.ann == a
        sums = S.weighted_sums(crowd, a, who, w, agree.base)
        got = S.weighted_mean(crowd, a, r.row[mine], sums)
        assert np.allclose(got, want[mine], rtol=0, atol=1e-9), a


def test_without_co_ratings_serving_gives_the_plain_mean():
    r, z, _, _ = _two_camps(seed=1)
    first = np.zeros(len(r), bool)
    first[np.unique(r.row, return_index=True)[1]] = True
    agree = S.agreement_fit(r.ann[first], r.row[first], z[first], 40, 300)
    assert agree == S.NO_PAIRS and agree.base == 0.0
    index = S.TrainIndex(r.ann[first], r.row[first], z[first], 300)
    crowd = Crowd.build(r, z, 300)
    who, w = index.agreements(0, agree)
    got = S.weighted_mean(
        crowd, 0, r.row, S.weighted_sums(crowd, 0, who, w, agree.base)
    )
    mine = r.ann == 0
    assert np.array_equal(got[mine], crowd.others_mean(r)[mine])


def _fit(snap, emb, hyper, prior):
    ratings = T.Ratings(snap.r_row, snap.r_ann, snap.r_score)
    with compute_threads():
        return T.fit_heads(
            emb=emb,
            fit=ratings,
            n_ann=len(snap.annotator_keys),
            hyper=hyper,
            prior=prior,
        )


def test_checkpoint_round_trip_keeps_the_member_and_old_ones_load_without(tmp_path):
    from rewardmodel.training import train_and_evaluate

    snap, emb = planted(11)
    with compute_threads():
        res = train_and_evaluate(snap=snap, emb=emb, cfg={"seed": 11, "similar": True})
    model = res.model
    n_ann = len(snap.annotator_keys)
    assert model.similar is not None and model.similar.tau2 != 0
    assert model.hyper.blend_similar.shape == (n_ann,)
    # The constants are the deployed fit's: all ratings, normalised as fitted.
    r = T.Ratings(snap.r_row, snap.r_ann, snap.r_score)
    y = T.normalised(r, model.norm_mean, model.norm_std)
    assert model.similar == S.agreement_fit(r.ann, r.row, y, n_ann, emb.shape[0])
    checkpoint_save(tmp_path / "m.npz", model=model, keys=snap.annotator_keys, meta={})
    loaded, _, _ = checkpoint_load(tmp_path / "m.npz")
    assert loaded.similar == model.similar
    assert np.array_equal(loaded.hyper.blend_similar, model.hyper.blend_similar)
    assert np.array_equal(loaded.heads, model.heads)
    # Without the member (as every checkpoint before it): loads with it off.
    off = _fit(snap, emb, replace(model.hyper, blend_similar=None), model.prior)
    assert off.similar is None
    checkpoint_save(tmp_path / "o.npz", model=off, keys=snap.annotator_keys, meta={})
    old, _, _ = checkpoint_load(tmp_path / "o.npz")
    assert old.similar is None and old.hyper.blend_similar is None
    # A file from before the member (no arrays at all) loads the same way.
    with np.load(tmp_path / "o.npz") as z:
        arrays = {k: z[k] for k in z.files if k not in ("similar", "blend_similar")}
    np.savez(tmp_path / "older.npz", **arrays)
    older, _, _ = checkpoint_load(tmp_path / "older.npz")
    assert older.similar is None and older.hyper.blend_similar is None
    bad = dict(arrays, similar=model.similar.as_array(), blend_similar=np.ones(2))
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match="one weight per head"):
        checkpoint_load(tmp_path / "bad.npz")


def test_promotion_scores_the_member_as_served_and_evaluated():
    """``comparison.score_query`` (what promotion compares) adds the member
    with agreements from the model's fit ratings, as the report does."""
    from rewardmodel import comparison as C
    from rewardmodel import evaluation as V
    from rewardmodel.crowd import similar_part
    from rewardmodel.training import train_and_evaluate

    snap, emb = planted(13)
    with compute_threads():
        res = train_and_evaluate(snap=snap, emb=emb, cfg={"seed": 13, "similar": True})
    keys, n_ann = snap.annotator_keys, len(snap.annotator_keys)
    w = np.linspace(0.2, 0.8, n_ann)  # by hand: never 0, so dropping it shows
    model = replace(res.model, hyper=replace(res.model.hyper, blend_similar=w))
    r = T.Ratings(snap.r_row, snap.r_ann, snap.r_score)
    query = np.arange(len(r)) % 7 == 0
    x = model.feat.x(emb)
    args = dict(x=x, ratings=r, keys=keys, query=query)
    got = C.score_query(model, keys, **args, fit=np.ones(len(r), bool))
    data = V.Data(emb=emb, ratings=r, split=snap.r_split, n_ann=n_ann, ks=[0], seed=0)
    data._feat = model.feat
    ctx = V.Context(data, r, r)
    q = r.take(query)
    part = similar_part(model.hyper, ctx, q)
    want = ctx.view(q).forward(model.heads) + part
    assert np.abs(part).max() > 0.05
    assert np.allclose(got, want, rtol=0, atol=1e-5)
    without = C.score_query(model, keys, **args)  # no fit ratings: no member
    assert not np.allclose(without, want, rtol=0, atol=1e-3)


@pytest.mark.django_db
def test_a_run_refuses_a_similar_setting_that_is_not_true_or_false():
    from core.exceptions import InvalidInput
    from rewardmodel import services as rm
    from rewardmodel.models import TrainingRun

    with pytest.raises(InvalidInput, match="similar must be true or false"):
        rm.training_run_create(config={"similar": "yes"})
    assert not TrainingRun.objects.exists()
