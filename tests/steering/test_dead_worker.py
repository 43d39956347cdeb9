"""Issue 24, 3: a steering run whose worker died does not stay "running": a
redelivered task waits for the heartbeat to stop, then fails it with the reason;
the beat sweep fails it when nothing is redelivered (the whole worker died)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.jobs import StillRunning, stale_after, takeover_after
from steering import services, tasks
from steering.models import Optimization
from tests.factories import AnnotatorFactory, StudyFactory

pytestmark = pytest.mark.django_db


def _running(age: timedelta) -> Optimization:
    return Optimization.objects.create(
        study=StudyFactory(),
        annotator=AnnotatorFactory(),
        base_prompt="a cat",
        proposer="attribute",
        backend="procedural",
        rounds=1,
        per_round=1,
        max_images=1,
        status="running",
        started_at=timezone.now() - age,
        heartbeat_at=timezone.now() - age,
    )


def test_a_redelivered_task_waits_then_fails_the_dead_workers_run():
    opt = _running(timedelta(seconds=1))
    with pytest.raises(StillRunning):
        services.optimization_run(optimization_id=opt.pk)
    Optimization.objects.filter(pk=opt.pk).update(
        heartbeat_at=timezone.now() - takeover_after() - timedelta(seconds=1)
    )
    assert services.optimization_run(optimization_id=opt.pk) == "skipped"
    opt.refresh_from_db()
    assert opt.status == "failed" and "no heartbeat" in opt.error
    assert opt.finished_at is not None


def test_the_sweep_fails_a_run_without_heartbeat():
    fresh = _running(timedelta(seconds=1))
    dead = _running(stale_after() + timedelta(seconds=5))
    assert tasks.sweep_stale_optimizations() == 1
    fresh.refresh_from_db()
    dead.refresh_from_db()
    assert fresh.status == "running"
    assert dead.status == "failed" and "killed or crashed" in dead.error
