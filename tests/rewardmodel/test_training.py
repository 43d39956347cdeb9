import numpy as np
import pytest
from django.db import IntegrityError, transaction

from annotation import services as ann
from annotation import splits
from core.exceptions import Conflict
from rewardmodel import services
from rewardmodel.checkpoint import checkpoint_load
from rewardmodel.models import AnnotatorMetric, ModelVersion, TrainingRun
from rewardmodel.snapshot import snapshot_take

from .conftest import TINY

pytestmark = pytest.mark.django_db


def _train(study, **config):
    run = services.training_run_create(study=study, config=config)
    return services.training_run_execute(run_id=run.pk)


def test_training_run_records_a_complete_version(rated_study):
    study, annotators = rated_study
    run = _train(study, seed=1)
    assert run.status == "succeeded", run.error
    v = run.version
    assert v.is_active and v.status == "active" and v.study == study
    assert v.backbone == TINY and v.weights_loaded is False
    assert "RANDOM" in v.backbone_warning
    assert v.data_counts["ratings"] == 120 and v.data_counts["annotators"] == 8
    assert sum(v.data_counts[f"ratings_{s}"] for s in splits.SPLITS) == 120
    # Promotion reads the validation figure, never a test one.
    assert (
        v.primary_metric
        == pytest.approx(v.metrics["selection"]["val_seen_pairwise_accuracy"])
        or v.primary_metric is None
    )
    assert set(v.metrics["unseen"]) == {"k=0", "k=5", "k=10", "k=20"}
    for who in ("model", "population", "per_annotator_ridge", "loo_consensus"):
        assert who in v.metrics["seen"]
    assert len(v.checkpoint_sha256) == 64 and v.checkpoint_path.endswith(".npz")
    model, keys, header = checkpoint_load(v.checkpoint_path)
    assert header["backbone"] == TINY and len(keys) == 8
    # The deployed model is refit on everything: every annotator has a head.
    assert model.fitted.all()
    rows = AnnotatorMetric.objects.filter(version=v, split="seen")
    assert rows.count() == v.metrics["seen"]["n_annotators"]
    assert all(
        set(r.baselines) == {"population", "per_annotator_ridge", "loo_consensus"}
        for r in rows
    )
    assert "selected on validation" in v.log and run.progress == 1.0


def test_training_is_deterministic(rated_study):
    study, _ = rated_study
    a = _train(study, seed=7).version
    b = _train(study, seed=7).version
    ma, _, _ = checkpoint_load(a.checkpoint_path)
    mb, _, _ = checkpoint_load(b.checkpoint_path)
    assert np.array_equal(ma.heads, mb.heads)
    assert a.metrics == b.metrics


def test_failed_run_leaves_the_active_version_untouched(rated_study):
    study, _ = rated_study
    good = _train(study).version
    assert good.is_active
    bad = _train(study, backbone="open_clip:no-such-architecture")
    assert bad.status == "failed"
    assert "no-such-architecture" in bad.error
    assert "FAILED" in bad.log
    assert ModelVersion.objects.count() == 1
    good.refresh_from_db()
    assert good.is_active
    # The lock was released: the next run works.
    assert _train(study).status == "succeeded"


def test_too_few_ratings_fails_cleanly(db, rm_settings):
    run = services.training_run_create()
    run = services.training_run_execute(run_id=run.pk)
    assert run.status == "failed" and "usable ratings" in run.error


def test_bad_config_is_refused(db):
    from core.exceptions import InvalidInput

    with pytest.raises(InvalidInput, match="seed"):
        services.training_run_create(config={"seed": "x"})
    with pytest.raises(InvalidInput, match="ks"):
        services.training_run_create(config={"ks": [5, -1]})
    assert not TrainingRun.objects.exists()


def test_only_one_run_at_a_time(rated_study):
    study, _ = rated_study
    queued = services.training_run_create(study=study)
    with pytest.raises(Conflict):
        services.training_run_create(study=study)
    # Another worker holds the lock (a running row): this run cannot start.
    from django.utils import timezone

    TrainingRun.objects.create(status="running", heartbeat_at=timezone.now())
    with pytest.raises(Conflict):
        services.training_run_execute(run_id=queued.pk)
    queued.refresh_from_db()
    assert queued.status == "queued"
    # The database itself refuses a second running row.
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(status="running")


def test_excluded_annotators_and_invalid_ratings_are_left_out(rated_study):
    study, annotators = rated_study
    before = snapshot_take(study_id=study.pk)
    n_excluded = annotators[0].ratings.count()
    ann.annotator_set_status(annotator=annotators[0], status="excluded")
    after = snapshot_take(study_id=study.pk)
    assert after.r_score.size == before.r_score.size - n_excluded
    assert str(annotators[0].pk) not in after.annotator_keys


def test_snapshot_carries_the_stored_splits(rated_study):
    study, _ = rated_study
    snap = snapshot_take(study_id=study.pk)
    from annotation.models import Rating

    stored = {
        (a, i): s
        for a, i, s in Rating.objects.filter(study=study).values_list(
            "annotator_id", "image_id", "split"
        )
    }
    got = {
        (int(snap.annotator_keys[a]), snap.image_ids[r]): splits.SPLITS[c]
        for a, r, c in zip(snap.r_ann, snap.r_row, snap.r_split, strict=True)
    }
    assert got == stored
    # r_id follows the same (key) order: the comparison's "newer" ratings.
    by_id = dict(Rating.objects.filter(study=study).values_list("pk", "split"))
    assert {
        int(i): splits.SPLITS[c] for i, c in zip(snap.r_id, snap.r_split, strict=True)
    } == by_id


def test_the_run_log_prints_plain_numbers_and_the_backbone_load(
    rated_study, monkeypatch
):
    """The live log says a backbone is being loaded before the load starts, and
    its numbers are plain (no ``np.float64(...)`` from a dict's repr)."""
    from rewardmodel import backbones

    monkeypatch.setattr(backbones, "_CACHE", {})  # this process has loaded none
    study, _ = rated_study
    run = _train(study, seed=3)
    assert run.status == "succeeded", run.error
    lines = run.log.splitlines()
    loading = next(i for i, t in enumerate(lines) if "loading backbone" in t)
    assert TINY in lines[loading] and "30 images" in lines[loading]
    assert "RANDOM weights" in lines[loading + 1]
    assert "np." not in run.log
    selected = next(t for t in lines if "selected on validation" in t)
    assert "tau2_rel=" in selected and "pop_lambda=" in selected
