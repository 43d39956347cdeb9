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
    fresh = [
        ann.image_create(
            study=study, data=png_bytes(91_000 + i, size=(32, 32)), filename=f"n{i}"
        )
        for i in range(6)
    ]
    embeddings.embeddings_compute(
        backbone=run.version.backbone, image_ids=[im.pk for im in fresh]
    )
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


def _features(pred, image_ids, annotator):
    rows = np.asarray([pred.rows[i] for i in image_ids])
    return T.Features.full(pred.x[rows], pred.crowd_feature(rows, annotator.pk))
