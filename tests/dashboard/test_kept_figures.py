"""The dashboard's kept figures (dashboard/figures.py, issue 29): no render
computes Krippendorff's alpha or the dealing counts; a Celery task does, into the
study's ``StudyFigures`` row, and the pages read that row, say how old it is, and
say "being computed" (having queued a refresh) while there is none.

Runs on PostgreSQL and on SQLite (the embedded ``make run``), the task queued by
the page and run by Celery in eager mode (a real worker runs it in
tests/e2e/test_dashboard.py)."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotation.engine.selectors import dealing_dealt
from annotation.quality.selectors import study_alpha
from config.celery import app as celery_app
from dashboard import figures
from dashboard.models import StudyFigures
from dashboard.tasks import refresh_figures
from tests.factories import AnnotatorFactory, StudyFactory, make_images

from .conftest import rate_all

pytestmark = pytest.mark.django_db

ALPHA_SQL = "SUM(CASE WHEN m >= 2"  # alpha's pass over the study's ratings
DEALT_SQL = "dealt_by"  # the dealing counts' pass over the assignments


@pytest.fixture
def eager():
    """Celery runs a queued task at once, in this process (its eager mode)."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


@pytest.fixture
def rated():
    study = StudyFactory(raters_per_image=4, quota_per_annotator=6)
    make_images(study, 6)
    rate_all(
        study, [AnnotatorFactory() for _ in range(3)], lambda i, im: 1 + (im.pk + i) % 5
    )
    return study


def render(client, name, study):
    with CaptureQueriesContext(connection) as ctx:
        body = client.get(reverse(f"dashboard:{name}", args=[study.pk]))
    assert body.status_code == 200
    sql = [q["sql"] for q in ctx.captured_queries]
    passes = sum(ALPHA_SQL in q for q in sql) + sum(DEALT_SQL in q for q in sql)
    return body.content.decode(), passes


def same(kept, computed) -> bool:
    """Equal once through JSON (the row keeps tuples as lists), floats exactly."""
    return kept == json.loads(json.dumps(computed))


def alpha_text(study) -> str:
    return f"{study_alpha(study=study)['alpha']:.3f}"


def test_pages_read_the_kept_figures_and_queue_them_when_missing(
    staff_client, rated, eager, django_capture_on_commit_callbacks
):
    study = rated
    with django_capture_on_commit_callbacks(execute=True) as queued:
        body, passes = render(staff_client, "quality", study)
    # Nothing computed during the render; a refresh queued, run by Celery.
    assert passes == 0 and "being computed" in body and alpha_text(study) not in body
    assert len(queued) == 1
    kept = StudyFigures.objects.get(study=study)
    assert same(kept.value["alpha"], study_alpha(study=study))
    assert same(kept.value["dealt"], dealing_dealt(study=study))
    assert kept.checked_at == kept.computed_at is not None

    with django_capture_on_commit_callbacks() as queued:
        body, passes = render(staff_client, "quality", study)
    assert passes == 0 and not queued
    assert (
        alpha_text(study) in body and "as of" in body and "being computed" not in body
    )
    body, passes = render(staff_client, "study", study)
    dealt = dealing_dealt(study=study)
    assert passes == 0 and "as of" in body
    assert f"{dealt['fullest_first']} fullest first" in body and dealt["fullest_first"]


def test_new_ratings_are_counted_off_the_page_exactly(staff_client, rated, eager):
    study = rated
    assert figures.figures_refresh(study_id=study.pk) == "computed"
    before = alpha_text(study)
    rate_all(study, [AnnotatorFactory()], lambda i, im: 7 - im.pk % 3)
    assert alpha_text(study) != before  # the new ratings move alpha
    # The page shows the kept figure, with its time, and computes nothing.
    body, passes = render(staff_client, "quality", study)
    assert passes == 0 and before in body and "as of" in body
    # The task counts again: the same figures as computed directly.
    assert figures.figures_refresh(study_id=study.pk) == "computed"
    kept = StudyFigures.objects.get(study=study).value
    assert same(kept["alpha"], study_alpha(study=study))
    assert same(kept["dealt"], dealing_dealt(study=study))
    body, _ = render(staff_client, "quality", study)
    assert alpha_text(study) in body


def test_an_unchanged_study_is_not_counted_again(rated):
    study = rated
    figures.figures_refresh(study_id=study.pk)
    first = StudyFigures.objects.get(study=study)
    with CaptureQueriesContext(connection) as ctx:
        assert figures.figures_refresh(study_id=study.pk) == "unchanged"
    assert not any(ALPHA_SQL in q["sql"] for q in ctx.captured_queries)
    again = StudyFigures.objects.get(study=study)
    assert again.value == first.value and again.computed_at == first.computed_at
    assert again.checked_at > first.checked_at  # known current since


def test_a_stale_row_queues_one_refresh_per_interval(
    staff_client, rated, django_capture_on_commit_callbacks
):
    study = rated
    figures.figures_refresh(study_id=study.pk)
    old = timezone.now() - timedelta(seconds=figures.STALE_S + 5)
    StudyFigures.objects.filter(pk=study.pk).update(checked_at=old)
    with django_capture_on_commit_callbacks() as queued:
        render(staff_client, "quality", study)
        render(staff_client, "study", study)
        render(staff_client, "quality", study)
    assert len(queued) == 1  # the first render asked; the others saw it asked


def test_an_older_computation_never_overwrites_a_newer_one(rated):
    study = rated
    figures.figures_refresh(study_id=study.pk)
    later = timezone.now() + timedelta(hours=1)
    StudyFigures.objects.filter(pk=study.pk).update(
        computed_at=later, fingerprint=None, value={"alpha": None, "dealt": {}}
    )
    assert figures.figures_refresh(study_id=study.pk) == "superseded"
    assert StudyFigures.objects.get(pk=study.pk).value == {"alpha": None, "dealt": {}}


def test_the_beat_refreshes_every_viewed_study(rated, eager):
    unseen = StudyFactory()
    StudyFigures.objects.create(study=rated)
    assert refresh_figures.delay().get() == 1
    assert same(
        StudyFigures.objects.get(study=rated).value["alpha"], study_alpha(study=rated)
    )
    assert not StudyFigures.objects.filter(study=unseen).exists()


def test_a_study_without_ratings_shows_no_alpha(staff_client, eager, db):
    study = StudyFactory()
    figures.figures_refresh(study_id=study.pk)
    body, passes = render(staff_client, "quality", study)
    assert passes == 0 and 'id="alpha">—' in body and "0 images" in body


def test_the_dealing_card_counts_ratings_without_reading_them(staff_client, rated):
    """Per ranked annotator, their ratings in the study: the database's tally,
    the same number as counting their rows."""
    from annotation.engine.models import DealingState
    from annotation.engine.selectors import dealing_overview
    from annotation.models import Participation, Rating

    study = rated
    for i, p in enumerate(Participation.objects.filter(study=study)):
        DealingState.objects.create(
            study=study,
            annotator_id=p.annotator_id,
            uncertainty=0.1 * i,
            refreshed_at=timezone.now(),
        )
    with CaptureQueriesContext(connection) as ctx:
        rows = dealing_overview(study=study, dealt={})["annotators"]
    assert len(rows) == 3 and all(r["ratings"] for r in rows)
    for r in rows:
        assert (
            r["ratings"]
            == Rating.objects.filter(
                study=study, annotator_id=r["annotator_id"]
            ).count()
        )
    assert not any('FROM "annotation_rating"' in q["sql"] for q in ctx.captured_queries)
