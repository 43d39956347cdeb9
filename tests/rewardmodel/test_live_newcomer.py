"""A newcomer's prediction reflects each new rating at once (issue 26): the
adapted head and the spread are cached by the annotator's latest rating id and
count, not for a fixed time, so rating and predicting within the same second
sees the change."""

import numpy as np
import pytest

from annotation import services as ann
from rewardmodel import embeddings, inference
from rewardmodel import services as rm
from rewardmodel import taste as T
from tests.factories import png_bytes

pytestmark = pytest.mark.django_db


def _rate_one(annotator, study, score):
    lease = ann.assignment_claim(annotator=annotator, study=study)[0]
    ann.rating_submit(assignment_id=lease.pk, annotator=annotator, score=score)


def test_each_new_rating_changes_the_next_prediction_at_once(rated_study):
    study, _ = rated_study
    run = rm.training_run_execute(
        run_id=rm.training_run_create(study=study, promote="always").pk
    )
    assert run.status == "succeeded", run.error
    _fresh_images(study, run, 6)
    newcomer = ann.annotator_create()
    ann.participation_consent(annotator=newcomer, study=study, token=study.invite_token)
    ids = list(study.images.values_list("pk", flat=True))
    pred = inference.load(run.version)
    # A personal part for newcomers, whatever this tiny study selected, so that
    # the spread depends on their ratings too.
    pred.model.hyper.new_tau2_rel = max(pred.model.hyper.tau2_rel, 1.0)
    before = inference.predict(annotator=newcomer, image_ids=ids, spread=True)
    assert before["how"] == "cold start"
    for n, score in enumerate([7, 1, 6], start=1):
        _rate_one(newcomer, study, score)
        now = inference.predict(annotator=newcomer, image_ids=ids, spread=True)
        assert now["how"] == f"adapted from {n} ratings"
        assert now["scores"] != before["scores"]
        assert now["spread"] != before["spread"]
        # The served spread is the posterior given exactly these ratings.
        rated = list(newcomer.ratings.values_list("image_id", flat=True))
        f = _features(pred, rated, newcomer)
        std = pred.head(newcomer)[2]
        want = std * pred.model.spread(f, fitted=False).sd(
            _features(pred, ids, newcomer)
        )
        assert np.allclose([now["spread"][i] for i in ids], want)
        before = now
    # Nothing new: the cached head serves (same answer, no re-adaptation).
    again = inference.predict(annotator=newcomer, image_ids=ids, spread=True)
    assert again["scores"] == before["scores"]


def test_the_update_after_a_rating_equals_adapting_from_scratch(
    rated_study, monkeypatch
):
    """A newcomer's head and spread are updated in place after each rating
    (``posterior.LivePosterior``), not recomputed from all their ratings; over
    a random sequence of ratings they equal the closed form from scratch
    (``Model.adapt``, ``Model.spread``), and so do they after a rating stops
    counting or the crowd is rebuilt (both start the state over)."""
    from annotation.engine.models import Rating

    study, _ = rated_study
    run = rm.training_run_execute(
        run_id=rm.training_run_create(study=study, promote="always").pk
    )
    assert run.status == "succeeded", run.error
    _fresh_images(study, run, 10)
    newcomer = ann.annotator_create()
    ann.participation_consent(annotator=newcomer, study=study, token=study.invite_token)
    ids = list(study.images.values_list("pk", flat=True))
    pred = inference.load(run.version)
    pred.model.hyper.new_tau2_rel = max(pred.model.hyper.tau2_rel, 1.0)
    pred.live.clear()
    rng = np.random.default_rng(2026)
    kept = None
    for n in range(1, 9):
        _rate_one(newcomer, study, int(rng.integers(1, 8)))
        got = inference.predict(annotator=newcomer, image_ids=ids, spread=True)
        assert got["how"] == f"adapted from {n} ratings"
        live = pred.live[(newcomer.pk, False)]
        if kept is not None:
            assert live is kept  # folded in, not started over
        kept = live
        _assert_from_scratch(pred, newcomer, ids, got)
    Rating.objects.filter(pk=newcomer.ratings.order_by("pk").first().pk).update(
        is_valid=False
    )
    got = inference.predict(annotator=newcomer, image_ids=ids, spread=True)
    assert got["how"] == "adapted from 7 ratings"
    assert pred.live[(newcomer.pk, False)] is not kept
    _assert_from_scratch(pred, newcomer, ids, got)
    kept = pred.live[(newcomer.pk, False)]
    pred.crowd_built = float("-inf")  # the crowd is rebuilt on the next read
    got = inference.predict(annotator=newcomer, image_ids=ids, spread=True)
    assert pred.live[(newcomer.pk, False)] is not kept
    _assert_from_scratch(pred, newcomer, ids, got)
    # A process keeps at most MAX_LIVE of them, the least recently used goes.
    monkeypatch.setattr(inference, "MAX_LIVE", 1)
    other = ann.annotator_create()
    inference.predict(annotator=other, image_ids=ids)
    assert list(pred.live) == [(other.pk, False)]
    got = inference.predict(annotator=newcomer, image_ids=ids, spread=True)
    _assert_from_scratch(pred, newcomer, ids, got)


def _fresh_images(study, run, n):
    """``n`` images nobody has rated yet, with their embeddings."""
    fresh = [
        ann.image_create(
            study=study, data=png_bytes(91_000 + i, size=(32, 32)), filename=f"n{i}"
        )
        for i in range(n)
    ]
    embeddings.embeddings_compute(
        backbone=run.version.backbone, image_ids=[im.pk for im in fresh]
    )


def _assert_from_scratch(pred, newcomer, ids, got):
    rated = list(
        newcomer.ratings.filter(is_valid=True)
        .order_by("pk")
        .values_list("image_id", "score")
    )
    f = _features(pred, [r[0] for r in rated], newcomer)
    head, mean, std = pred.model.adapt(f, np.asarray([r[1] for r in rated], float))
    served = pred.head(newcomer)
    assert (served[1], served[2]) == (mean, std)
    assert np.allclose(served[0], head, rtol=1e-4, atol=1e-5)
    g = _features(pred, ids, newcomer)
    want = mean + std * T.forward(g[:, :-2], g[:, -2], head)
    assert np.allclose([got["scores"][i] for i in ids], want, rtol=1e-4, atol=1e-4)
    sd = std * pred.model.spread(f, fitted=False).sd(g)
    assert np.allclose([got["spread"][i] for i in ids], sd, rtol=1e-6, atol=1e-9)


def _features(pred, image_ids, annotator):
    rows = np.asarray([pred.rows[i] for i in image_ids])
    return T.Features.full(pred.x[rows], pred.crowd_feature(rows, annotator.pk))
