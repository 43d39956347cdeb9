"""The model must learn: on planted data (seeded) the personalised model beats
the population model by a margin, and at least matches the simple baselines.
A model that does not fit individual taste fails here."""

from types import SimpleNamespace

import numpy as np
import pytest

from annotation.splits import split_assign
from rewardmodel.evaluation import CODES
from rewardmodel.threads import compute_threads
from rewardmodel.training import train_and_evaluate


def planted(seed: int, *, n_img=320, n_ann=70, dim=24, per_image=12, shared_only=False):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_img, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    shared = rng.normal(size=dim)
    own = rng.normal(size=(n_ann, dim))
    # people differ (or, shared_only, they don't)
    taste = np.tile(shared, (n_ann, 1)) if shared_only else 0.6 * shared + own
    rows, anns, scores, split = [], [], [], []
    for i in range(n_img):
        for a in rng.choice(n_ann, per_image, replace=False):
            u = emb[i] @ taste[a] * 2.0 + rng.normal(0, 0.5)
            rows.append(i)
            anns.append(a)
            scores.append(float(np.clip(np.rint(4 + 1.2 * u), 1, 7)))
            key = {"image_key": f"{seed}:{i}", "annotator_key": f"{seed}:{a}"}
            split.append(CODES[split_assign(**key)])
    split = np.asarray(split)
    snap = SimpleNamespace(
        r_row=np.asarray(rows),
        r_ann=np.asarray(anns),
        r_score=np.asarray(scores),
        r_split=split,
        annotator_keys=[str(a) for a in range(n_ann)],
        counts={"ratings_train": int((split == 0).sum())},
        e_score=np.zeros(0),
        e_row=np.zeros(0, np.int64),
        e_src=np.zeros(0, np.int64),
        sources=[],
    )
    return snap, emb


@pytest.mark.parametrize("seed", [11, 12])
def test_personalised_beats_population_by_a_margin(seed):
    snap, emb = planted(seed)
    with compute_threads():
        res = train_and_evaluate(snap=snap, emb=emb, cfg={"seed": seed})
    seen = res.summary["seen"]
    acc = {w: seen[w]["pairwise_accuracy"] for w in seen if isinstance(seen[w], dict)}
    assert seen["n_annotators"] >= 40
    assert acc["model"] >= acc["population"] + 0.05, acc
    assert acc["model"] >= acc["per_annotator_ridge"] - 0.005, acc
    assert acc["model"] >= acc["loo_consensus"], acc
    # Newcomers: more ratings help, and never below the population.
    unseen = res.summary["unseen"]
    k = {int(n[2:]): b["model"]["pairwise_accuracy"] for n, b in unseen.items()}
    pop = unseen["k=0"]["population"]["pairwise_accuracy"]
    assert k[20] > pop and k[20] >= k[5] - 0.01, (k, pop)


def test_without_learnable_individual_taste_the_model_stays_at_the_best_baseline():
    """Taste that is one shared direction plus noise: nothing personal to learn.
    The blend (``stacking``) then leans on the baseline members and the model
    ends level with the best baseline on test, not below it by a wrong pick."""
    snap, emb = planted(14, shared_only=True)
    with compute_threads():
        res = train_and_evaluate(snap=snap, emb=emb, cfg={"seed": 14})
    weights = res.summary["selection"]["blend"]["weights"]
    # α's nested folds halve the images (the blend meets new images): val_seen's
    # and those of the train rows (``crossfit``)
    val = np.unique(snap.r_row[snap.r_split == CODES["val_seen"]]).size
    train = np.unique(snap.r_row[snap.r_split == CODES["train"]]).size
    images = res.summary["selection"]["blend"]["shrinkage"]["images"]
    assert val + 0.9 * train <= images <= val + train
    # the crowd members: the consensus, and the similar crowd where it is on
    crowd = weights["consensus"] + weights.get("similar", 0.0)
    assert weights["population"] + crowd > weights["model"], weights
    seen = res.summary["seen"]
    best = max(
        seen[w]["pairwise_accuracy"]
        for w in ("population", "per_annotator_ridge", "loo_consensus")
    )
    assert seen["model"]["pairwise_accuracy"] >= best - 0.005
    for k, cell in res.summary["unseen"].items():
        assert (
            cell["model"]["pairwise_accuracy"]
            >= cell["population"]["pairwise_accuracy"]
        ), k


@pytest.mark.parametrize("mode", ["auto", "per_annotator"])
def test_selection_and_blend_never_read_test(mode):
    """Garbage in every test score leaves the selected hyper-parameters, the
    blend weights (per annotator too, and the out-of-fold choice between them
    and the global blend) and the validation figures bit for bit unchanged;
    garbage in validation scores moves them (so the comparison can fail)."""
    snap, emb = planted(12)
    cfg = {"seed": 12, "blend_mode": mode}
    with compute_threads():
        clean = train_and_evaluate(snap=snap, emb=emb, cfg=cfg)
    per = clean.model.hyper.blend_annotators
    assert "per_annotator" in clean.summary["selection"]["blend"]
    if mode == "per_annotator":
        assert per is not None and per.shape == (len(snap.annotator_keys), 4)
    rng = np.random.default_rng(5)
    for codes, same in (
        ([CODES["test_seen"], CODES["test_unseen"]], True),
        ([CODES["val_seen"]], False),
    ):
        noisy = SimpleNamespace(**vars(snap))
        hit = np.isin(snap.r_split, codes)
        noisy.r_score = snap.r_score.copy()
        noisy.r_score[hit] = rng.integers(1, 8, size=int(hit.sum()))
        with compute_threads():
            res = train_and_evaluate(snap=noisy, emb=emb, cfg=cfg)
        blend = res.summary["selection"]["blend"]
        assert (blend == clean.summary["selection"]["blend"]) is same
        got = res.model.hyper.blend_annotators
        if mode == "per_annotator":
            assert np.array_equal(got, per) is same
        assert (res.summary["hyper"] == clean.summary["hyper"]) is same
        assert (res.summary["selection"] == clean.summary["selection"]) is same


def test_per_annotator_blend_weights_make_the_heads_and_survive_the_checkpoint(
    tmp_path,
):
    """Per-annotator weights (``Hyper.blend_annotators``) build each fitted
    annotator's head from their own row, are saved with the checkpoint and come
    back bit for bit; a checkpoint without them loads with the pooled weights."""
    from dataclasses import replace

    from rewardmodel import stacking as S
    from rewardmodel import taste as T
    from rewardmodel.checkpoint import checkpoint_load, checkpoint_save

    snap, emb = planted(11)
    with compute_threads():
        res = train_and_evaluate(snap=snap, emb=emb, cfg={"seed": 11})
    pooled = np.asarray(res.model.hyper.blend, np.float64)
    n_ann = len(snap.annotator_keys)
    per = np.tile(pooled, (n_ann, 1))
    per[0] = (0.0, 0.0, 1.0, 0.0)  # annotator 0: the ridge alone
    per[1] = (1.0, 0.0, 0.0, 0.0)  # annotator 1: the model member alone
    hyper = replace(res.model.hyper, blend_annotators=per)
    ratings = T.Ratings(snap.r_row, snap.r_ann, snap.r_score)

    def fit(h):
        with compute_threads():
            return T.fit_heads(
                emb=emb, fit=ratings, n_ann=n_ann, hyper=h, prior=res.model.prior
            )

    model, glob = fit(hyper), fit(replace(hyper, blend_annotators=None))
    assert np.array_equal(glob.heads, res.model.heads)  # None: the global blend
    assert not np.allclose(model.heads[:2], glob.heads[:2])
    assert np.array_equal(model.heads[2:], glob.heads[2:])  # pooled rows: same
    f = np.ones((3, model.w0.size))
    assert S.model_share(model.hyper, 0) == 0.0
    assert S.model_share(model.hyper, 5) == pooled[0]
    # the spread of one's own part scales with their own model share
    assert model.spread(f, fitted=True, index=0).tau2 == 0
    full = model.hyper.tau2_rel * model.kscale
    assert full > 0
    assert np.isclose(model.spread(f, fitted=True, index=1).tau2, full)
    checkpoint_save(tmp_path / "m.npz", model=model, keys=snap.annotator_keys, meta={})
    loaded, keys, header = checkpoint_load(tmp_path / "m.npz")
    assert header["hyper"]["blend_mode"] == "per_annotator"
    assert np.array_equal(loaded.hyper.blend_annotators, per)
    assert np.array_equal(loaded.heads, model.heads)
    assert S.model_share(loaded.hyper, 0) == 0.0
    assert S.model_share(loaded.hyper, 5) == pooled[0]
    assert np.allclose(fit(loaded.hyper).heads, model.heads)
    checkpoint_save(tmp_path / "g.npz", model=glob, keys=snap.annotator_keys, meta={})
    old, _, header = checkpoint_load(tmp_path / "g.npz")
    assert old.hyper.blend_annotators is None
    assert header["hyper"]["blend_mode"] == "global"
