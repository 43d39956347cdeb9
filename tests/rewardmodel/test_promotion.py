import hashlib
import re

import pytest
from django.db import IntegrityError, transaction

from core.exceptions import Conflict
from rewardmodel import services
from rewardmodel.models import ModelVersion, TrainingRun, VersionEvent

pytestmark = pytest.mark.django_db


def _version(tmp_path, metric, name, comparison=None):
    path = tmp_path / f"{name}.pt"
    path.write_bytes(name.encode())
    run = None
    if comparison is not None:
        run = TrainingRun.objects.create(status="succeeded", comparison=comparison)
    return ModelVersion.objects.create(
        training_run=run,
        backbone="pixelstats:v1",
        weights_loaded=True,
        primary_metric=metric,
        checkpoint_path=str(path),
        checkpoint_sha256=hashlib.sha256(name.encode()).hexdigest(),
    )


def _paired(against, new, old):
    """A run's comparison as services.comparison stores it."""
    return {
        "against": against.pk,
        "possible": True,
        "metric": "pairwise accuracy",
        "n_ratings": 40,
        "n_annotators": 6,
        "new": {"mean": new, "ci95": [new - 0.1, new + 0.1]},
        "active": {"mean": old, "ci95": [old - 0.1, old + 0.1]},
        "difference": {"mean": new - old, "ci95": [new - old - 0.05, new - old + 0.08]},
    }


def test_promotion_compares_both_versions_on_the_same_held_out_ratings(tmp_path):
    """The decision follows the paired comparison on the same held-out ratings,
    never the validation figures (which came from different snapshots): a
    candidate with the higher validation figure but worse on the shared ratings
    stays a candidate, and the reverse is promoted."""
    v1 = _version(tmp_path, 0.70, "v1")
    assert services.model_version_promote(version=v1)
    v1.refresh_from_db()
    assert v1.is_active and "first version" in v1.promotion_reason

    worse = _version(tmp_path, 0.99, "v2", _paired(v1, 0.60, 0.65))
    assert not services.model_version_promote(version=worse)
    worse.refresh_from_db()
    v1.refresh_from_db()
    assert not worse.is_active and v1.is_active
    assert "worse" in worse.promotion_reason
    # One pass (two chained replaces mix the labels up when v1's pk is 2).
    names = {f"v{worse.pk}": "v2", f"v{v1.pk}": "v1"}
    text = re.sub(r"v\d+\b", lambda m: names.get(m[0], m[0]), worse.promotion_reason)
    assert "v2 0.600 [0.500, 0.700], v1 0.650" in text
    assert "difference -0.050 [-0.100, +0.030]" in worse.promotion_reason
    assert worse.events.get().action == VersionEvent.Action.NOT_PROMOTED

    equal = _version(tmp_path, 0.10, "v3", _paired(v1, 0.65, 0.65))
    assert services.model_version_promote(version=equal)
    equal.refresh_from_db()
    v1.refresh_from_db()
    assert equal.is_active and v1.status == "retired" and not v1.is_active
    assert equal.events.get().previous == v1

    # Compared with v1, but v3 is active now: no decision on stale figures.
    stale = _version(tmp_path, 0.9, "v4", _paired(v1, 0.9, 0.5))
    assert not services.model_version_promote(version=stale)
    stale.refresh_from_db()
    assert f"not compared with the active v{equal.pk}" in stale.promotion_reason

    # No held-out rating to compare on: the active version stays.
    none = _version(
        tmp_path,
        0.9,
        "v5",
        {"against": equal.pk, "possible": False, "reason": "no test-split rating"},
    )
    assert not services.model_version_promote(version=none)
    none.refresh_from_db()
    assert "no test-split rating" in none.promotion_reason

    assert services.model_version_promote(version=worse, force=True, reason="test")
    worse.refresh_from_db()
    assert worse.is_active and worse.promotion_reason.startswith("forced")
    assert ModelVersion.objects.filter(is_active=True).count() == 1


def test_rollback_to_an_earlier_version(tmp_path):
    v1 = _version(tmp_path, 0.7, "v1")
    v2 = _version(tmp_path, 0.8, "v2")
    services.model_version_promote(version=v1)
    services.model_version_promote(version=v2, force=True)
    services.model_version_rollback(version=v1, reason="v2 misbehaves")
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.is_active and not v2.is_active
    event = v1.events.filter(action=VersionEvent.Action.ROLLED_BACK).get()
    assert event.previous == v2 and "v2 misbehaves" in event.reason
    with pytest.raises(Conflict):
        services.model_version_rollback(version=v1)
    # A tampered checkpoint is refused.
    open(v2.checkpoint_path, "wb").write(b"tampered")
    with pytest.raises(Conflict):
        services.model_version_rollback(version=v2)


def test_only_one_active_version_is_a_database_rule(tmp_path):
    _version(tmp_path, 0.5, "a")
    ModelVersion.objects.filter(checkpoint_path__endswith="a.pt").update(
        is_active=True, status="active"
    )
    b = _version(tmp_path, 0.5, "b")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=b.pk).update(is_active=True, status="active")


def test_one_active_version_per_study_is_a_database_rule(tmp_path):
    from tests.factories import StudyFactory

    s1, s2 = StudyFactory(), StudyFactory()
    a = _version(tmp_path, 0.5, "a")
    b = _version(tmp_path, 0.5, "b")
    c = _version(tmp_path, 0.5, "c")
    ModelVersion.objects.filter(pk__in=[a.pk, c.pk]).update(study=s1)
    ModelVersion.objects.filter(pk=b.pk).update(study=s2)
    for v in (a, b):
        v.refresh_from_db()
        assert services.model_version_promote(version=v)
    # Each study keeps its own active version.
    assert ModelVersion.objects.filter(is_active=True).count() == 2
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=c.pk).update(is_active=True, status="active")
    c.refresh_from_db()
    assert services.model_version_promote(version=c, force=True)  # retires a, not b
    a.refresh_from_db()
    b.refresh_from_db()
    assert not a.is_active and b.is_active


@pytest.mark.django_db
def test_selection_never_reads_test(rated_study, monkeypatch):
    """Selection sees train and validation only: with every test rating's score
    replaced by garbage, the chosen hyper-parameters and the validation figure
    do not move (the reported test figures do). Promotion reads test ratings,
    but only ones newer than the active version, after selection is done."""
    from rewardmodel import evaluation, training
    from rewardmodel.snapshot import snapshot_take
    from rewardmodel.threads import compute_threads

    study, _ = rated_study
    snap = snapshot_take(study_id=study.pk)
    import numpy as np

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(snap.n_rows, 16)).astype(np.float32)
    with compute_threads():
        clean = training.train_and_evaluate(snap=snap, emb=emb, cfg={})
    test = np.isin(
        snap.r_split, [evaluation.CODES["test_seen"], evaluation.CODES["test_unseen"]]
    )
    assert test.any()
    snap.r_score = snap.r_score.copy()
    snap.r_score[test] = rng.integers(1, 8, size=int(test.sum()))
    with compute_threads():
        noisy = training.train_and_evaluate(snap=snap, emb=emb, cfg={})
    assert noisy.summary["primary_metric"] == clean.summary["primary_metric"]
    assert noisy.summary["hyper"] == clean.summary["hyper"]
    assert noisy.summary["selection"] == clean.summary["selection"]
    # (and the test figures do move, where this small fixture has any)
    if clean.per_annotator:
        assert noisy.per_annotator != clean.per_annotator
