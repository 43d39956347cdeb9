"""No training run blocks training forever (issue 9, item 5)."""

from datetime import timedelta

import pytest
from django.utils import timezone

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
    _age(run, services.STALE_AFTER + timedelta(minutes=1))
    assert services.training_runs_fail_stale() == 1
    run.refresh_from_db()
    assert run.status == "failed" and "heartbeats" in run.error


def test_the_nightly_task_clears_a_stuck_run(db, django_capture_on_commit_callbacks):
    stuck = TrainingRun.objects.create(status="running", heartbeat_at=timezone.now())
    _age(stuck, services.STALE_AFTER * 2)
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
