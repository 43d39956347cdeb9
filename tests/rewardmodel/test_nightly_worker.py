"""The nightly beat task with a real ``celery -A config worker`` on Redis: the
plan goes through the broker and the worker trains one study after another."""

import time

import pytest

from rewardmodel import services, tasks
from rewardmodel.models import TrainingRun
from tests.celery_worker import running_worker

from .conftest import TINY, make_study, rate_study
from .test_nightly import _new_ratings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_the_beat_task_retrains_each_study_through_a_real_worker(
    redis_broker, transactional_db, rm_settings, tmp_path
):
    studies = []
    for seed in (1, 2):
        study, people = make_study(n_images=24, seed=seed)
        rate_study(study, people, seed=seed)
        run = services.training_run_create(study=study, promote="always")
        assert services.training_run_execute(run_id=run.pk).status == "succeeded"
        _new_ratings(study, people, 66_000 + seed)
        studies.append(study)

    env = {
        "PALATE_RM_DIR": rm_settings.REWARDMODEL_DIR,
        "PALATE_RM_BACKBONE": TINY,
        "HF_HUB_OFFLINE": "1",
    }
    with running_worker(
        broker=redis_broker, tmp_path=tmp_path, name="nightly", env=env
    ) as (proc, log_path):
        assert tasks.nightly_retrain() == "queued"  # as beat calls it
        nightly = TrainingRun.objects.filter(trigger="schedule")
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            if nightly.filter(finished_at__isnull=False).count() == 2:
                break
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(1)
        runs = list(nightly.order_by("pk"))
    assert [r.study_id for r in runs] == [s.pk for s in studies], log_path.read_text()[
        -3000:
    ]
    assert all(r.status == "succeeded" for r in runs), [r.error for r in runs]
    assert runs[0].finished_at <= runs[1].started_at  # one at a time
