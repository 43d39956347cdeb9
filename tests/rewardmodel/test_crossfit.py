"""The blend's train rows (``crossfit.train_rows``, issue 26): every member's
prediction of a train rating comes from fits that never saw its image, so the
rating's own score never reaches it; the other fold's fits do see it (so the
comparison can fail); selection uses the rows and still reads no test rating
(``test_learning.test_selection_and_blend_never_read_test`` covers that)."""

from types import SimpleNamespace

import numpy as np
import pytest

from rewardmodel import crossfit as CF
from rewardmodel import selection as Sel
from rewardmodel import training as TR
from rewardmodel.evaluation import CODES
from rewardmodel.threads import compute_threads
from tests.rewardmodel.test_learning import planted


def _rows(snap, emb, cfg):
    data = TR._data(snap, emb, {**TR.DEFAULT_CONFIG, "seed": 12})
    ctx = Sel.selection_context(data)
    tuned = Sel.tune_baselines(data)
    lams = dict.fromkeys(("content", "crowd", "crowd_only", "zero"), 0.1)
    lams["content"] = tuned.pop_lambda
    return CF.train_rows(ctx, cfg, lams, tuned.ridge_tau2_rel), data.n_ann


@pytest.mark.parametrize(
    "cfg",
    [Sel.Config("crowd", 0.0, 0.1), Sel.Config("content", 10.0, 1.0, 0.8, 0.1)],
    ids=["isotropic", "taste-directions"],
)
def test_a_train_rating_never_reaches_its_own_members_predictions(cfg, monkeypatch):
    snap, emb = planted(12)
    train = snap.r_split == CODES["train"]
    with compute_threads():
        (p, y, ann, img), n_ann = _rows(snap, emb, cfg)
    # at most PER_ANNOTATOR train rows each; every one below it
    per = np.bincount(snap.r_ann[train], minlength=n_ann)
    got = np.bincount(ann - n_ann, minlength=n_ann)  # ids offset: apart from val
    assert per.max() > CF.PER_ANNOTATOR
    assert np.array_equal(got, np.minimum(per, CF.PER_ANNOTATOR))
    monkeypatch.setattr(CF, "PER_ANNOTATOR", 10**6)
    with compute_threads():
        (p, y, ann, img), n_ann = _rows(snap, emb, cfg)
    assert p.shape == (int(train.sum()), 5)  # every train rating, five members
    # one train rating's score changed: (annotator a, image i)
    k = np.flatnonzero(train)[7]
    a, i = snap.r_ann[k], snap.r_row[k]
    moved = SimpleNamespace(**vars(snap))
    moved.r_score = snap.r_score.copy()
    moved.r_score[k] = 8 - snap.r_score[k] if snap.r_score[k] != 4 else 1
    with compute_threads():
        (p2, y2, ann2, img2), _ = _rows(moved, emb, cfg)
    assert np.array_equal(img, img2) and np.array_equal(ann, ann2)
    mine = ann == a + n_ann
    own = mine & (img == i)
    assert own.sum() == 1 and y[own] != y2[own]
    # the held fold of image i: fits without it; a's rows there are unchanged
    # (the crowd column leaves a out, normalisation comes from the other fold)
    fold = np.isin(img, _fold_of(img, i))
    assert np.array_equal(p[mine & fold], p2[mine & fold])
    # the other fold's fits did see the rating: a's predictions there move
    assert not np.array_equal(p[mine & ~fold], p2[mine & ~fold])


def _fold_of(img, i):
    """The images held out together with image ``i`` (``crossfit``'s parts)."""
    images = np.unique(img)
    part = np.empty(images.size, np.int64)
    rng = np.random.default_rng(12 + CF.FOLD_SEED)
    part[rng.permutation(images.size)] = np.arange(images.size) % CF.FOLDS
    return images[part == part[np.searchsorted(images, i)]]


def test_selection_fits_the_blend_on_val_seen_and_the_train_images():
    snap, emb = planted(12)
    data = TR._data(snap, emb, {**TR.DEFAULT_CONFIG, "seed": 12})
    with compute_threads():
        _, _, sel = Sel.select(data)
    blend = sel["blend"]
    train = snap.r_split == CODES["train"]
    per = np.bincount(snap.r_ann[train])
    assert blend["train_ratings"] == int(np.minimum(per, CF.PER_ANNOTATOR).sum())
    val = np.unique(snap.r_row[snap.r_split == CODES["val_seen"]]).size
    images = np.unique(snap.r_row[train]).size
    # α's folds halve val_seen's and the train rows' images together
    assert val + 0.9 * images <= blend["shrinkage"]["images"] <= val + images


def test_with_enough_val_seen_images_the_blend_keeps_to_val_seen(monkeypatch):
    """At ``MAX_VAL_IMAGES`` val_seen images no train rows (the refits' time is
    spent only where val_seen is small): the blend is main's val_seen-only one."""
    snap, emb = planted(12)
    val = np.unique(snap.r_row[snap.r_split == CODES["val_seen"]]).size
    monkeypatch.setattr(CF, "MAX_VAL_IMAGES", val)
    with compute_threads():
        rows, _ = _rows(snap, emb, Sel.Config("crowd", 0.0, 0.1))
        _, _, sel = Sel.select(TR._data(snap, emb, {**TR.DEFAULT_CONFIG, "seed": 12}))
    assert rows is None
    assert sel["blend"]["train_ratings"] == 0
    assert sel["blend"]["shrinkage"]["images"] == val
