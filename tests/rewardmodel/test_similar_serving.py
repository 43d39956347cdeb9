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


def _dense_reference(ann, row, z, n_ann, n_rows, crowd, r):
    """The member written out with (A, A) and (A, images) arrays (as it was
    first built): the weights and the predictions of ratings ``r``."""
    zsum, cnt = np.zeros((n_ann, n_rows)), np.zeros((n_ann, n_rows))
    np.add.at(zsum, (ann, row), z)
    np.add.at(cnt, (ann, row), 1.0)
    zbar = np.divide(zsum, cnt, out=np.zeros_like(zsum), where=cnt > 0)
    has = (cnt > 0).astype(np.float64)
    prod, prod2, n = zbar @ zbar.T, (zbar**2) @ (zbar**2).T, has @ has.T
    off = ~np.eye(n_ann, dtype=bool)
    pair = off & (n > 0)
    tot = n[pair].sum()
    m = prod[pair].sum() / tot
    sigma2 = prod2[pair].sum() / tot - m * m
    raw = prod[pair] / n[pair]
    ss = (n[pair] * (raw - m) ** 2).sum()
    tau2 = (ss - (pair.sum() - 1) * sigma2) / (tot - (n[pair] ** 2).sum() / tot)
    post = np.full((n_ann, n_ann), m)
    if tau2 > 0:  # else no spread beyond noise: everyone m
        post[pair] = m + n[pair] * tau2 / (n[pair] * tau2 + sigma2) * (raw - m)
    w = np.where(off, np.maximum(post, 0.0), 0.0)
    zs, cs = np.zeros((n_ann, crowd.sums.size)), np.zeros((n_ann, crowd.sums.size))
    for a, (rr, zz) in crowd.own.items():
        np.add.at(zs[a], rr, zz)
        np.add.at(cs[a], rr, 1.0)
    num = (w[r.ann] * zs[:, r.row].T).sum(axis=1)
    den = (w[r.ann] * cs[:, r.row].T).sum(axis=1)
    return w, np.where(
        den > 1e-12, num / np.where(den > 0, den, 1), crowd.others_mean(r)
    )


@pytest.mark.parametrize("seed, camps", [(0, 2), (3, 1)])
def test_sparse_agreements_and_predictions_equal_the_dense_ones(seed, camps):
    """Two camps: the mean agreement m is about 0 (pairs who never co-rated
    get 0); one camp: m > 0, so everyone else has a weight."""
    r, z, _, _ = _two_camps(seed=seed, camps=camps)
    fit = r.row < 200
    # a repeated rating (counted once, at its mean, by both sides)
    rows = np.append(r.row[fit], r.row[0])
    anns = np.append(r.ann[fit], r.ann[0])
    zs = np.append(z[fit], z[0] + 1.0)
    crowd = Crowd.build(r, z, 300)
    dense_w, want = _dense_reference(anns, rows, zs, 40, 300, crowd, r)
    sim = Similar.fit(T.Ratings(rows, anns, zs), zs, 40, 300)
    agree = S.agreement_fit(anns, rows, zs, 40, 300)
    assert agree == sim.agreement and (agree.base > 0.1) is (camps == 1)
    assert np.allclose(sim.weights, dense_w, rtol=0, atol=1e-12)
    assert np.allclose(sim.predict(crowd, r), want, rtol=0, atol=1e-9)
    index = S.TrainIndex(anns, rows, zs, 300)
    for a in range(40):  # serving's path, one annotator at a time
        mine = r.ann == a
        sums = S.weighted_sums(crowd, a, *index.agreements(a, agree), agree.base)
        got = S.weighted_mean(crowd, a, r.row[mine], sums)
        assert np.allclose(got, want[mine], rtol=0, atol=1e-9), a


def test_pairs_are_the_same_in_chunks(monkeypatch):
    r, z, _, _ = _two_camps(seed=4)
    whole = S.pair_sums(r.ann, r.row, z, 40, 300)
    monkeypatch.setattr(S, "PAIR_CHUNK", 150)  # a chunk every ~1.5 images
    parts = S.pair_sums(r.ann, r.row, z, 40, 300)
    assert np.array_equal(whole[0], parts[0])
    for a, b in zip(whole[1:], parts[1:], strict=True):
        assert np.allclose(a, b, rtol=1e-12, atol=0)


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


@pytest.mark.parametrize("similar", [True, [3, 5.0, 1, 0, 1]], ids=["m", "lowrank"])
def test_promotion_scores_the_member_as_served_and_evaluated(similar):
    """``comparison.score_query`` (what promotion compares) adds the member
    with agreements from the model's fit ratings, as the report does (also
    under the low-rank prior, ``lowrank.PairPrior``)."""
    from rewardmodel import comparison as C
    from rewardmodel import evaluation as V
    from rewardmodel.crowd import similar_part
    from rewardmodel.training import train_and_evaluate

    snap, emb = planted(13)
    with compute_threads():
        res = train_and_evaluate(
            snap=snap, emb=emb, cfg={"seed": 13, "similar": similar}
        )
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
    data.similar = tuple(similar) if isinstance(similar, list) else True
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

    with pytest.raises(InvalidInput, match="similar must be true, false"):
        rm.training_run_create(config={"similar": "yes"})
    # The low-rank prior's list (``lowrank``): served only without "everyone".
    with pytest.raises(InvalidInput, match="everyone 0"):
        rm.training_run_create(config={"similar": [4, 5.0, 1, 1, 1]})
    with pytest.raises(InvalidInput, match="similar must be true, false"):
        rm.training_run_create(config={"similar": [4]})
    assert not TrainingRun.objects.exists()
    # The named setting is the tuned list, and a run takes it.
    from rewardmodel.training import LOWRANK, similar_config

    assert similar_config("lowrank") == LOWRANK == similar_config([4, 5, 1, 0, 1])
    rm.training_run_create(config={"similar": "lowrank"})
    assert TrainingRun.objects.count() == 1


@pytest.mark.django_db
def test_serving_reads_agreements_from_the_fitted_ratings_only(rated_study):
    """Agreements are the fitted model's: ratings given after the training run
    (here two annotators co-rating a new image) must not enter them until the
    next run (``Predictor._fit_ratings`` reads up to the run's last rating)."""
    from annotation import services as ann
    from rewardmodel import inference

    from .conftest import trained_with_unrated_image

    study, annotators = rated_study
    run, new_image = trained_with_unrated_image(
        study, seed=4_242, config={"similar": True}
    )
    pred = inference.load(run.version)
    x, y = annotators[0], annotators[1]
    before = pred._fit_ratings(x.pk)
    assert x.pk in before.mine  # they were fitted and rated
    for a in (x, y):  # the only open image now: the new one
        (lease,) = ann.assignment_claim(annotator=a, study=study)
        assert lease.image_id == new_image.pk
        ann.rating_submit(assignment_id=lease.pk, annotator=a, score=6)
    after = pred._fit_ratings(x.pk)
    np.testing.assert_array_equal(after.mine[x.pk][0], before.mine[x.pk][0])
    np.testing.assert_array_equal(after.mine[x.pk][1], before.mine[x.pk][1])
    np.testing.assert_array_equal(after.row_ann, before.row_ann)
