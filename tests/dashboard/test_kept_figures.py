"""Krippendorff's alpha on the quality page is kept per study (dashboard/
recent.py): reused while the study's ratings do not change, shown "as of" a
time when they have changed within the minute, computed again after that."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation import selectors as annotation_selectors
from dashboard import recent
from tests.factories import AnnotatorFactory, StudyFactory, make_images

from .conftest import rate_all

pytestmark = pytest.mark.django_db

ALPHA_SQL = "SUM(CASE WHEN m >= 2"  # the pass over the study's ratings


def render(client, study):
    with CaptureQueriesContext(connection) as ctx:
        body = client.get(reverse("dashboard:quality", args=[study.pk]))
    assert body.status_code == 200
    passes = sum(ALPHA_SQL in q["sql"] for q in ctx.captured_queries)
    return body.content.decode(), passes


def shown_alpha(study) -> str:
    return f"{annotation_selectors.study_alpha(study=study)['alpha']:.3f}"


def test_alpha_is_kept_until_the_ratings_change_and_says_as_of_when(
    staff_client, monkeypatch
):
    study = StudyFactory(raters_per_image=4, quota_per_annotator=6)
    make_images(study, 6)
    rate_all(
        study, [AnnotatorFactory() for _ in range(3)], lambda i, im: 1 + (im.pk + i) % 5
    )
    body, passes = render(staff_client, study)
    assert passes == 1 and shown_alpha(study) in body and "as of" not in body
    # Nothing changed: the kept value, without a pass, and not labelled.
    body, passes = render(staff_client, study)
    assert passes == 0 and shown_alpha(study) in body and "as of" not in body
    before = shown_alpha(study)
    rate_all(study, [AnnotatorFactory()], lambda i, im: 7 - im.pk % 3)
    assert shown_alpha(study) != before  # the new ratings move alpha
    # Within the minute: the kept value, labelled with its time.
    body, passes = render(staff_client, study)
    assert passes == 0 and before in body and "as of" in body
    # Past the minute: computed again, current, not labelled.
    monkeypatch.setattr(recent, "MAX_AGE", 0)
    body, passes = render(staff_client, study)
    assert passes == 1 and shown_alpha(study) in body and "as of" not in body
