"""The progress page's rates say which window they use, and imported ratings are
not activity (issue 22, finding 6): they count toward progress, never toward
ratings per hour, the projection or "annotators active now"."""

import pytest
from django.urls import reverse

from annotation import selectors
from annotation.datasets.services.import_ratings import RatingRecord, ratings_import
from tests.factories import AnnotatorFactory, StudyFactory, make_images, png_bytes

from .conftest import rate_all

pytestmark = pytest.mark.django_db


def _import(study, raters=4, images=3):
    """An imported dataset: ``raters`` people rated ``images`` images each (the
    ratings are written now, as an import writes them)."""
    return ratings_import(
        study=study,
        dataset="elsewhere",
        records=[
            RatingRecord(
                rater=f"r{r}",
                score=1 + (r + i) % 5,
                image_key=f"img{i}",
                image_bytes=png_bytes(20_000 + i),
            )
            for r in range(raters)
            for i in range(images)
        ],
    )


def test_an_imported_draft_study_shows_no_activity(staff_client):
    study = StudyFactory(status="draft", raters_per_image=5)
    assert _import(study)["ratings_created"] == 12
    p = selectors.study_dashboard(study=study)
    assert p["ratings"] == 12 and p["ratings_imported"] == 12
    assert p["active_now"] == 0
    assert p["ratings_last_hour"] == 0
    assert sum(n for _, n in p["per_hour"]) == 0
    assert p["rate_recent"] == 0 and p["projected_completion"] is None
    body = staff_client.get(reverse("dashboard:study", args=[study.pk])).content
    assert b'<b id="active-now">0</b>' in body
    assert b'<b id="last-hour">0</b>' in body
    assert b"12 of the 12 valid ratings were imported" in body


def test_collected_ratings_count_and_each_figure_names_its_window(staff_client):
    study = StudyFactory(raters_per_image=5, quota_per_annotator=10)
    _import(study)
    make_images(study, 2, start=50)
    people = rate_all(study, [AnnotatorFactory(), AnnotatorFactory()], lambda i, m: 3)
    # The first fills the one slot left on each imported image and rates both new
    # ones; the second gets only the new ones.
    collected = (3 + 2) + 2
    p = selectors.study_dashboard(study=study)
    assert p["ratings"] == 12 + collected and p["ratings_imported"] == 12
    assert p["active_now"] == len(people)
    assert p["ratings_last_hour"] == collected
    assert sum(n for _, n in p["per_hour"]) == collected
    assert p["rate_recent"] == collected / 6
    body = staff_client.get(reverse("dashboard:study", args=[study.pk])).content
    text = body.decode()
    assert "ratings collected in the last 60 minutes" in text
    assert "a live lease or a rating in the last 10 minutes" in text
    assert "the mean rate of the last 6 hours" in text
    assert "Ratings collected per hour, last 48 hours" in text
    # The API's progress uses the same count.
    api = staff_client.get(f"/api/v1/studies/{study.pk}/progress/").json()
    assert api["ratings_last_hour"] == collected
