"""No training run blocks training for long (issue 9, item 5; issue 24, 1-3)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.jobs import stale_after
from rewardmodel import services, tasks
from rewardmodel.models import TrainingRun

pytestmark = pytest.mark.django_db


def _age(run, delta):
    TrainingRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - delta, heartbeat_at=timezone.now() - delta
    )


def test_a_queued_run_no_worker_started_is_failed_with_a_reason(db):
    # What "Add training run" in the admin used to leave behind: a queued row
    # no worker was ever told about.
    orphan = TrainingRun.objects.create(trigger="admin")
    with pytest.raises(Exception, match="already queued"):
        services.training_run_create()
    _age(orphan, services.QUEUE_TIMEOUT + timedelta(minutes=1))
    run = services.training_run_create()  # not blocked any more
    orphan.refresh_from_db()
    assert orphan.status == "failed" and "No worker started" in orphan.error
    assert orphan.finished_at is not None
    assert run.status == "queued"


def test_a_running_run_without_heartbeat_is_failed(db):
    run = TrainingRun.objects.create(status="running", heartbeat_at=timezone.now())
    assert services.training_runs_fail_stale() == 0
    _age(run, stale_after() + timedelta(minutes=1))
    assert services.training_runs_fail_stale() == 1
    run.refresh_from_db()
    assert run.status == "failed" and "no heartbeat" in run.error


def test_the_nightly_task_clears_a_stuck_run(db, django_capture_on_commit_callbacks):
    stuck = TrainingRun.objects.create(status="running", heartbeat_at=timezone.now())
    _age(stuck, stale_after() * 2)
    tasks.nightly_retrain()
    stuck.refresh_from_db()
    assert stuck.status == "failed"


def test_adding_a_run_in_the_admin_starts_it(
    client, staff_user, django_capture_on_commit_callbacks
):
    client.force_login(staff_user)
    url = "/admin/rewardmodel/trainingrun/add/"
    assert client.get(url).status_code == 200
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = client.post(url, {"promote": "auto", "config": "{}"})
    assert r.status_code == 302, r.content.decode()[:2000]
    run = TrainingRun.objects.get()
    assert run.status == "queued" and run.trigger == "admin"
    assert len(callbacks) == 1  # handed to a worker on commit
    # A second add while it is queued is refused with a message, not a 500.
    r = client.post(url, {"promote": "auto", "config": "{}"})
    assert r.status_code == 200 and "already queued" in r.content.decode()
    assert TrainingRun.objects.count() == 1


def test_a_killed_run_stops_blocking_training_within_two_minutes(db):
    """Issue 24, 2: a run whose worker died blocked training for 30 minutes."""
    run = TrainingRun.objects.create(status="running", heartbeat_at=timezone.now())
    with pytest.raises(Exception, match="already running"):
        services.training_run_create()
    _age(run, timedelta(minutes=2))
    assert services.training_run_create().status == "queued"
    run.refresh_from_db()
    assert run.status == "failed" and "killed or crashed" in run.error


def test_the_sweep_deletes_the_dead_runs_partial_checkpoints(db, settings, tmp_path):
    from rewardmodel import conf

    settings.REWARDMODEL_DIR = str(tmp_path)
    run = TrainingRun.objects.create(status="running", heartbeat_at=timezone.now())
    folder = conf.checkpoint_dir()
    half = folder / f".run{run.pk}-20261206T000000.npz.partial"
    orphan = folder / f"run{run.pk}-20261206T000000.npz"
    other = folder / f"run{run.pk + 1}-20261206T000000.npz"
    for path in (half, orphan, other):
        path.write_bytes(b"x")
    _age(run, timedelta(minutes=2))
    assert tasks.sweep_stale_runs() == 1
    assert not half.exists() and not orphan.exists() and other.exists()


def test_a_redelivered_task_waits_then_takes_over_a_dead_workers_run(db):
    """The pool process was killed: the redelivered copy finds the run running.
    While the heartbeat is fresh it is told to look again; once the stamp is
    older than the takeover age it owns the run (compare-and-set on the stamp,
    so a second copy finds nothing to take)."""
    from core.jobs import StillRunning, takeover_after
    from rewardmodel.services.runs import _start

    run = TrainingRun.objects.create(status="running", heartbeat_at=timezone.now())
    with pytest.raises(StillRunning) as waiting:
        _start(run)
    assert 0 < waiting.value.countdown <= takeover_after().total_seconds() + 1
    _age(run, takeover_after() + timedelta(seconds=1))
    run.refresh_from_db()
    stale = TrainingRun.objects.get(pk=run.pk)
    token = _start(run)
    assert token is not None
    assert _start(stale) is None  # the same stale stamp: the other copy lost
    run.refresh_from_db()
    assert run.status == "running" and run.started_at == token


def test_a_redelivery_later_than_the_stale_age_takes_its_run_over(db, rm_settings):
    """The flake of test_a_killed_pool_process_run_is_taken_over_and_trained: a
    redelivered task that arrived after the stale age (a slow pool restart on a
    loaded machine) failed its own run as "no heartbeat" in the sweep it runs
    first, instead of taking it over. It takes it over now: the run starts again
    (a new ``started_at``) and ends on its own terms (here: nothing to train on)."""
    run = TrainingRun.objects.create(status="running", heartbeat_at=timezone.now())
    _age(run, stale_after() + timedelta(seconds=5))
    before = TrainingRun.objects.get(pk=run.pk).started_at
    done = services.training_run_execute(run_id=run.pk)
    assert "no heartbeat" not in done.error, done.error
    assert done.started_at is not None and done.started_at != before
    assert done.status in ("succeeded", "failed")
