"""Issue 24, 2 and 3: a training run whose worker is SIGKILLed mid-run no longer
blocks training for 30 minutes. The pool process killed: the redelivered task
takes the run over and trains it; the whole worker killed: the beat sweep fails it
with a reason and the next run trains. A real worker, a real beat, real Redis
and PostgreSQL; job timings shortened (``FAST_JOBS``)."""

import pytest

from core.processes import process_kill
from rewardmodel import conf, services
from rewardmodel.models import TrainingRun
from tests.celery_worker import running_beat, running_worker, worker_database_url
from tests.worker_faults import (
    FAST_JOBS,
    kill_pool,
    partial_files,
    table_locked,
    wait_until,
)

from .conftest import TINY, make_study, rate_study

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def job_env(redis_broker, transactional_db, tmp_path, rm_settings):
    for key, value in FAST_JOBS.items():
        setattr(rm_settings, key, float(value))
    study, annotators = make_study(n_images=12, n_annotators=4, raters=3)
    rate_study(study, annotators)
    env = {
        "PALATE_RM_DIR": rm_settings.REWARDMODEL_DIR,
        "PALATE_RM_BACKBONE": TINY,
        "OMP_NUM_THREADS": "1",
        **FAST_JOBS,
    }
    return study, env


def _held_running(study):
    """Queue a run and wait until the worker has marked it running (it then waits
    on the locked rating table to take its snapshot)."""
    run = services.training_run_enqueue(study=study, config={"seed": 1})
    wait_until(
        lambda: TrainingRun.objects.get(pk=run.pk).status == "running",
        timeout=120,
        what="the run to be running",
    )
    return TrainingRun.objects.get(pk=run.pk)


def _finished(run_id):
    run = TrainingRun.objects.get(pk=run_id)
    return run if run.status in ("succeeded", "failed") else None


def test_a_killed_pool_process_run_is_taken_over_and_trained(
    job_env, redis_broker, tmp_path
):
    study, env = job_env
    with running_worker(
        broker=redis_broker, tmp_path=tmp_path, name="train-pool", env=env
    ) as (proc, log):
        with table_locked(worker_database_url(), "annotation_rating") as lock:
            first = _held_running(study)
            kill_pool(proc.pid)
            lock.release()
        done = wait_until(
            lambda: _finished(first.pk), timeout=240, what="the run to finish"
        )
        assert done.status == "succeeded", (done.error, log.read_text()[-3000:])
        assert done.started_at > first.started_at  # taken over, trained again
        assert partial_files(conf.checkpoint_dir()) == []


def test_a_killed_worker_run_is_failed_and_the_next_run_trains(
    job_env, redis_broker, tmp_path
):
    study, env = job_env
    with running_beat(broker=redis_broker, tmp_path=tmp_path, env=env):
        with running_worker(
            broker=redis_broker, tmp_path=tmp_path, name="train-all", env=env
        ) as (proc, _):
            with table_locked(worker_database_url(), "annotation_rating"):
                first = _held_running(study)
                process_kill(proc)
        with running_worker(
            broker=redis_broker, tmp_path=tmp_path, name="train-fresh", env=env
        ) as (_, log):
            done = wait_until(
                lambda: _finished(first.pk), timeout=120, what="the sweep to fail it"
            )
            assert done.status == "failed" and "no heartbeat" in done.error
            # Not "already running": the next run starts and trains.
            again = services.training_run_enqueue(study=study, config={"seed": 1})
            nxt = wait_until(
                lambda: _finished(again.pk), timeout=240, what="the next run"
            )
            assert nxt.status == "succeeded", (nxt.error, log.read_text()[-3000:])
