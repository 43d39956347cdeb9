import pytest
from django_celery_beat.models import PeriodicTask

from annotation import services as ann
from config.celery import app as celery_app
from rewardmodel import services, tasks
from rewardmodel.models import ModelVersion, TrainingRun
from tests.factories import png_bytes

from .conftest import make_study, rate_study

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager(monkeypatch):
    """Celery's eager mode: ``delay`` runs the task here, so the beat task and
    the chain of runs it hands on execute in this process, in order."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)


def test_the_nightly_schedule_exists_and_is_editable(db):
    task = PeriodicTask.objects.get(name=services.NIGHTLY_TASK_NAME)
    assert task.task == "rewardmodel.nightly_retrain" and task.enabled
    assert (task.crontab.hour, task.crontab.minute) == ("2", "30")


def _new_ratings(study, annotators, seed):
    ann.image_create(study=study, data=png_bytes(seed), filename=f"{seed}.png")
    assert rate_study(study, annotators) == study.raters_per_image


def _train(study):
    run = services.training_run_create(study=study, promote="always")
    run = services.training_run_execute(run_id=run.pk)
    assert run.status == "succeeded", run.error
    return run


def test_nightly_skips_without_new_ratings(
    rated_study, django_capture_on_commit_callbacks, eager
):
    study, annotators = rated_study
    # A fresh install (no version yet): the night trains the all-studies one.
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.nightly_retrain() == "queued"
    run = TrainingRun.objects.get(trigger="schedule")
    assert run.status == "succeeded" and run.study is None
    assert run.version.is_active

    assert tasks.nightly_retrain() == "skipped"
    assert TrainingRun.objects.filter(status="skipped").count() == 1

    # New ratings arrive (a new image): the next night trains again.
    _new_ratings(study, annotators, 77_001)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.nightly_retrain() == "queued"
    assert TrainingRun.objects.filter(trigger="schedule", status="succeeded").count()


def test_every_study_version_is_retrained_one_run_at_a_time(
    rm_settings, django_capture_on_commit_callbacks, eager
):
    """Studies A and B have versions of their own (made by Retrain now), C has
    none, so the all-studies version serves it. New ratings arrive in A and C:
    the beat task retrains A's version and the all-studies one, not B's (nothing
    new), one run after the other."""
    studies = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        study, people = make_study(n_images=24, seed=seed)
        rate_study(study, people, seed=seed)
        studies[name] = (study, people)
    before = {name: _train(s[0]).version for name, s in studies.items() if name != "c"}
    before["all"] = _train(None).version
    _new_ratings(*studies["a"], 88_001)
    _new_ratings(*studies["c"], 88_002)

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.nightly_retrain() == "queued"

    nightly = list(TrainingRun.objects.filter(trigger="schedule").order_by("pk"))
    assert [r.study_id for r in nightly] == [studies["a"][0].pk, None]
    assert all(r.status == "succeeded" for r in nightly), [r.error for r in nightly]
    # One at a time: each started after the one before had finished.
    assert nightly[0].finished_at <= nightly[1].started_at
    assert nightly[0].version.study == studies["a"][0]
    assert nightly[1].version.study is None
    # B's version was left alone.
    b = ModelVersion.objects.get(study=studies["b"][0], is_active=True)
    assert b == before["b"]

    # The next night has nothing new to learn.
    assert tasks.nightly_retrain() == "skipped"


def test_the_all_studies_version_is_left_alone_when_it_serves_no_study(
    rated_study, django_capture_on_commit_callbacks, eager
):
    study, annotators = rated_study
    _train(None)
    _train(study)  # the study's own version: the all-studies one serves nobody
    _new_ratings(study, annotators, 99_001)
    assert services.nightly_plan() == [study.pk]
