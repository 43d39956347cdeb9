import pytest
from django_celery_beat.models import PeriodicTask

from rewardmodel import services, tasks
from rewardmodel.models import TrainingRun

from .conftest import rate_study

pytestmark = pytest.mark.django_db


def test_the_nightly_schedule_exists_and_is_editable(db):
    task = PeriodicTask.objects.get(name=services.NIGHTLY_TASK_NAME)
    assert task.task == "rewardmodel.nightly_retrain" and task.enabled
    assert (task.crontab.hour, task.crontab.minute) == ("2", "30")


def test_nightly_skips_without_new_ratings(
    rated_study, django_capture_on_commit_callbacks
):
    study, annotators = rated_study
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert tasks.nightly_retrain() == "queued"
    assert len(callbacks) == 1
    run = TrainingRun.objects.get(status="queued")
    assert run.trigger == "schedule"
    assert services.training_run_execute(run_id=run.pk).status == "succeeded"

    assert tasks.nightly_retrain() == "skipped"
    assert TrainingRun.objects.filter(status="skipped").count() == 1

    # New ratings arrive (a new image): the next night trains again.
    from annotation import services as ann
    from tests.factories import png_bytes

    ann.image_create(study=study, data=png_bytes(77_001), filename="n.png")
    assert rate_study(study, annotators) == study.raters_per_image
    with django_capture_on_commit_callbacks(execute=False):
        assert tasks.nightly_retrain() == "queued"
