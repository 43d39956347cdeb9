import pytest
import torch
from django.db import IntegrityError, transaction

from annotation import services as ann
from core.exceptions import Conflict
from rewardmodel import services
from rewardmodel.data import snapshot_take
from rewardmodel.models import AnnotatorMetric, ModelVersion, TrainingRun

from .conftest import TINY

pytestmark = pytest.mark.django_db
FAST = {"steps": 40, "batch_size": 64}


def _train(study, **config):
    run = services.training_run_create(study=study, config={**FAST, **config})
    return services.training_run_execute(run_id=run.pk)


def test_training_run_records_a_complete_version(rated_study):
    study, annotators = rated_study
    run = _train(study, seed=1)
    assert run.status == "succeeded", run.error
    v = run.version
    assert v.is_active and v.status == "active"
    assert v.backbone == TINY and v.weights_loaded is False
    assert "RANDOM" in v.backbone_warning
    assert v.data_counts["ratings"] == 120 and v.data_counts["annotators"] == 8
    assert v.data_counts["unseen_annotators"] == 1
    assert v.primary_metric == v.metrics["seen"]["model"]["pairwise_accuracy"]
    assert set(v.metrics["unseen"]) == {"k=0", "k=5", "k=10", "k=20"}
    for who in ("population", "annotator_mean", "loo_consensus"):
        assert who in v.metrics["seen"]
    assert v.metrics["seen"]["annotator_mean"]["pairwise_accuracy"] == 0.5
    assert len(v.checkpoint_sha256) == 64
    ckpt = torch.load(v.checkpoint_path, weights_only=True)
    assert {"state_dict", "model_config", "backbone", "normalisation"} <= set(ckpt)
    assert ckpt["backbone"] == TINY
    rows = AnnotatorMetric.objects.filter(version=v, split="seen")
    assert rows.count() == v.metrics["seen"]["n_annotators"] >= 2
    assert all(
        set(r.baselines) == {"population", "annotator_mean", "loo_consensus"}
        for r in rows
    )
    assert "primary metric" in v.log and run.progress == 1.0


def test_training_is_reproducible_with_a_seed(rated_study):
    study, _ = rated_study
    a = _train(study, seed=7).version
    b = _train(study, seed=7).version
    c = _train(study, seed=8).version
    sa = torch.load(a.checkpoint_path, weights_only=True)["state_dict"]
    sb = torch.load(b.checkpoint_path, weights_only=True)["state_dict"]
    sc = torch.load(c.checkpoint_path, weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.metrics == b.metrics
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


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
    run = services.training_run_create(config=FAST)
    run = services.training_run_execute(run_id=run.pk)
    assert run.status == "failed" and "usable ratings" in run.error


def test_only_one_run_at_a_time(rated_study):
    study, _ = rated_study
    queued = services.training_run_create(study=study, config=FAST)
    with pytest.raises(Conflict):
        services.training_run_create(study=study)
    # Another worker holds the lock (a running row): this run cannot start.
    TrainingRun.objects.create(status="running", heartbeat_at=queued.created_at)
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


def test_stale_running_rows_are_failed(db):
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(hours=5)
    run = TrainingRun.objects.create(status="running", heartbeat_at=old)
    assert services.training_runs_fail_stale() == 1
    run.refresh_from_db()
    assert run.status == "failed" and "heartbeat" in run.error
