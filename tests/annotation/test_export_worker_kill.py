"""Issue 24, 1 and 3: an export whose worker is SIGKILLed mid-run is resumed (the
pool process died: the redelivered task takes it over) or failed with a reason
(the whole worker died: the beat sweep), leaves no partial files and does not
block the next export. A real worker, a real beat, real Redis and PostgreSQL;
the job timings are shortened (``FAST_JOBS``) so each case takes seconds."""

from pathlib import Path

import pytest

from annotation.datasets.services.export_jobs import export_enqueue
from annotation.models import Export
from core.processes import process_kill
from tests.annotation.export_fixtures import rated_study
from tests.celery_worker import running_beat, running_worker
from tests.worker_faults import (
    FAST_JOBS,
    file_blocked,
    kill_pool,
    partial_files,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def job_env(redis_broker, transactional_db, tmp_path, settings):
    settings.PALATE_EXPORT_DIR = tmp_path / "exports"
    for key, value in FAST_JOBS.items():
        setattr(settings, key, float(value))
    return {"PALATE_EXPORT_DIR": str(settings.PALATE_EXPORT_DIR), **FAST_JOBS}


def _last_image(study, settings):
    return Path(settings.MEDIA_ROOT) / study.images.order_by("pk").last().file.name


def _held_mid_export(study, root):
    """Queue an export and wait until the worker is inside it with files on disk
    (the last image's file is a pipe nobody writes: the export waits there, after
    writing the rating tables and the other images)."""
    export = export_enqueue(study=study)
    wait_until(
        lambda: (
            Export.objects.get(pk=export.pk).status == "running"
            and (root / f".work-{export.pk}").is_dir()
        ),
        timeout=120,
        what="the export to be running with its work folder",
    )
    assert partial_files(root)  # there is something to clean up
    return Export.objects.get(pk=export.pk)


def _finished(export_id):
    export = Export.objects.get(pk=export_id)
    return export if export.status in ("succeeded", "failed") else None


def test_a_killed_pool_process_export_is_taken_over_and_finished(
    job_env, redis_broker, tmp_path, settings
):
    root = settings.PALATE_EXPORT_DIR
    study = rated_study()
    with running_worker(
        broker=redis_broker, tmp_path=tmp_path, name="kill-pool", env=job_env
    ) as (proc, log):
        with file_blocked(_last_image(study, settings)) as lock:
            first = _held_mid_export(study, root)
            kill_pool(proc.pid)
            lock.release()
        done = wait_until(
            lambda: _finished(first.pk), timeout=120, what="the export to finish"
        )
        assert done.status == "succeeded", (done.error, log.read_text())
        assert done.started_at > first.started_at  # a second run took it over
        assert partial_files(root) == []
        assert (root / done.path).is_file()
        # Nothing blocks the next export.
        again = export_enqueue(study=study)
        assert (
            wait_until(lambda: _finished(again.pk), timeout=120, what="2nd").status
            == "succeeded"
        )


def test_a_killed_worker_export_is_failed_with_a_reason_and_cleaned(
    job_env, redis_broker, tmp_path, settings
):
    root = settings.PALATE_EXPORT_DIR
    study = rated_study()
    with running_beat(broker=redis_broker, tmp_path=tmp_path, env=job_env):
        with running_worker(
            broker=redis_broker, tmp_path=tmp_path, name="kill-all", env=job_env
        ) as (proc, _):
            with file_blocked(_last_image(study, settings)):
                first = _held_mid_export(study, root)
                process_kill(proc)  # the whole worker, at once
        # The message stays unacknowledged in Redis (visibility timeout: hours);
        # the beat sweep, run by a fresh worker, fails the export once its
        # heartbeat is stale.
        with running_worker(
            broker=redis_broker, tmp_path=tmp_path, name="fresh", env=job_env
        ):
            done = wait_until(
                lambda: _finished(first.pk), timeout=120, what="the sweep to fail it"
            )
            assert done.status == "failed" and "no heartbeat" in done.error
            assert partial_files(root) == []
            again = export_enqueue(study=study)
            assert (
                wait_until(lambda: _finished(again.pk), timeout=120, what="2nd").status
                == "succeeded"
            )
