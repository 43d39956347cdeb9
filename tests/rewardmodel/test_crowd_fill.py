"""Images nobody has rated (e.g. prompt steering's candidates): their crowd
feature is unknown, so the model fills in what it expects from the content
rather than 0, which would drop the shared part of taste the crowd column
absorbed during fitting."""

import numpy as np
import pytest

from rewardmodel import taste as T
from rewardmodel.checkpoint import checkpoint_load, checkpoint_save


def _world(seed=0, n_img=240, n_ann=12, dim=8):
    """Shared taste plus a smaller individual part, linear in the embedding;
    every image rated by every annotator (so the crowd column is informative)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_img, dim))
    w = 1.0 * rng.normal(size=dim) + 0.4 * rng.normal(size=(n_ann, dim))
    rows = np.repeat(np.arange(n_img), n_ann)
    ann = np.tile(np.arange(n_ann), n_img)
    true = np.einsum("id,ad->ia", emb, w)
    score = np.clip(np.rint(4 + true[rows, ann] + rng.normal(0, 0.8, rows.size)), 1, 7)
    fresh = rng.normal(size=(200, dim))  # images nobody rated
    return emb, T.Ratings(rows, ann, score), w, fresh


def _fit(emb, r, n_ann):
    hyper = T.Hyper(pop_lambda=0.1, tau2_rel=1.0, rho=10.0)
    return T.fit_heads(emb=emb, fit=r, n_ann=n_ann, hyper=hyper)


def _mean_corr(model, fresh, w, crowd):
    x = model.feat.x(fresh)
    f = T.Features.full(x, crowd)
    pred = f @ model.heads.T  # (images, annotators)
    truth = fresh @ w.T
    return np.mean(
        [np.corrcoef(pred[:, a], truth[:, a])[0, 1] for a in range(w.shape[0])]
    )


def test_unrated_images_are_ranked_by_the_expected_crowd_not_by_zero():
    emb, r, w, fresh = _world()
    model = _fit(emb, r, w.shape[0])
    # The crowd column took the shared taste: the content part alone is weak.
    assert model.w0[-2] > 0.5
    filled = _mean_corr(model, fresh, w, model.crowd_expected(model.feat.x(fresh)))
    zero = _mean_corr(model, fresh, w, np.zeros(len(fresh)))
    assert filled > 0.9
    assert filled > zero + 0.1, (filled, zero)


def test_crowd_fill_predicts_the_crowd_of_rated_images():
    emb, r, w, _ = _world(seed=1)
    model = _fit(emb, r, w.shape[0])
    mean, std = T.norm_stats(r, w.shape[0])
    y = T.normalised(r, mean, std)
    crowd = T.Crowd.build(r, y, emb.shape[0]).feature(r.row, y)
    expected = model.crowd_expected(model.feat.x(emb))[r.row]
    assert np.corrcoef(expected, crowd)[0, 1] > 0.9


def test_checkpoint_keeps_the_fill_and_old_checkpoints_fall_back_to_zero(tmp_path):
    emb, r, w, fresh = _world(n_img=60, n_ann=5)
    model = _fit(emb, r, 5)
    keys = [str(i) for i in range(5)]
    checkpoint_save(tmp_path / "m.npz", model=model, keys=keys, meta={})
    loaded, _, _ = checkpoint_load(tmp_path / "m.npz")
    x = model.feat.x(fresh)
    assert np.allclose(loaded.crowd_expected(x), model.crowd_expected(x))
    model.crowd_fill = None  # a version saved before the fill existed
    checkpoint_save(tmp_path / "old.npz", model=model, keys=keys, meta={})
    old, _, _ = checkpoint_load(tmp_path / "old.npz")
    assert old.crowd_fill is None
    assert np.array_equal(old.crowd_expected(x), np.zeros(len(x)))


@pytest.mark.django_db
def test_predict_fills_the_crowd_for_an_image_nobody_rated(rated_study):
    """Through the served path: an image of the study without ratings is scored
    with the expected crowd, one with ratings by others with theirs."""
    from rewardmodel import inference

    from .conftest import trained_with_unrated_image

    study, annotators = rated_study
    run, image = trained_with_unrated_image(study, seed=99_999)
    a = annotators[0]
    got = inference.predict(annotator=a, image_ids=[image.pk], version=run.version)
    pred = inference.load(run.version)
    model = pred.model
    head, mean, std, _ = pred.head(a)
    x = pred.x[pred.rows[image.pk]][None, :]
    fill = float(model.crowd_expected(x)[0])
    assert model.crowd_fill is not None and abs(fill) > 1e-6
    content = float(x[0] @ head[:-2]) + float(head[-1])
    assert got["scores"][image.pk] == pytest.approx(
        mean + std * (content + float(head[-2]) * fill), rel=1e-5
    )
