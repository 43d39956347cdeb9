"""Every dashboard page runs an exact number of queries per backend: the same
number for a small and a larger study (no query per annotator, image or
rating). Times are measured in benchmarks/dashboard.py, never asserted here."""

import pytest
from django.urls import reverse

from annotation import services
from annotation.models import StreamItem
from tests.factories import AnnotatorFactory, StudyFactory, make_images, png_bytes

from .conftest import make_version, rate_all

pytestmark = pytest.mark.django_db

# Page -> queries, exactly, per backend (session, user, then the page's own
# reads). The same for a small and a larger study: no query per annotator,
# image or rating. A change here is a decision, not drift: update the number.
QUERIES = {
    "postgresql": {
        "home": 7,
        # + dealing: ratings and rankings per person, the deals by policy read
        # from the kept figures (dashboard/figures.py; on the study's first view
        # also the row made and a refresh asked for: + 2); progress without a
        # pass over the ratings: images by count (with completion), last hour,
        # imported, annotators who rated (one more than the pass).
        "study": 16,
        # Sorted on light rows (participations, QC counts: 2), then the page's
        # rows in full (QC rows, their rating tallies, participations: 3; the
        # tally replaced the count of their ratings one for one: same total).
        "annotators": 12,
        "annotators_htmx": 12,
        "annotator": 14,  # + the held-out predictions (one row), their participation
        # alpha read from the kept figures (the study page made the row and
        # asked for it: no further request while it is being computed)
        "quality": 9,
        "model": 10,
    },
    "sqlite": {
        "home": 7,
        # + dealing: ratings and rankings per person, the deals by policy read
        # from the kept figures (dashboard/figures.py; on the study's first view
        # also the row made and a refresh asked for: + 2); progress without a
        # pass over the ratings: images by count (with completion), last hour,
        # imported, annotators who rated (one more than the pass).
        "study": 16,
        # Sorted on light rows (participations, QC counts: 2), then the page's
        # rows in full (QC rows, their rating tallies, participations: 3; the
        # tally replaced the count of their ratings one for one: same total).
        "annotators": 12,
        "annotators_htmx": 12,
        "annotator": 14,
        # alpha read from the kept figures (the study page made the row and
        # asked for it: no further request while it is being computed)
        "quality": 9,
        "model": 10,
    },
}


def build(n_annotators, n_images):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=n_images)
    make_images(study, n_images)
    services.quality_config_update(study=study, repeat_rate=0.3, repeat_gap=1)
    services.attention_check_create(study=study, data=png_bytes(5), expected_min=2)
    people = [AnnotatorFactory() for _ in range(n_annotators)]
    rate_all(study, people, lambda i, img: 1 + (img.pk * (i + 1)) % 7)
    for item in StreamItem.objects.filter(status="pending"):
        services.stream_item_answer(item_id=item.pk, annotator=item.annotator, score=3)
    make_version(study, people, lambda i: 0.5 + 0.01 * i, active=False)
    make_version(study, people, lambda i: 0.55 + 0.01 * i)
    services.annotator_moderate(annotator=people[0], action="pause", study=study)
    return study, people


def urls(study, person):
    return {
        "home": (reverse("dashboard:home"), {}),
        "study": (reverse("dashboard:study", args=[study.pk]), {}),
        "annotators": (
            reverse("dashboard:annotators", args=[study.pk]) + "?sort=accuracy",
            {},
        ),
        "annotators_htmx": (
            reverse("dashboard:annotators", args=[study.pk]) + "?sort=agreement",
            {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "annotator-table"},
        ),
        "annotator": (
            reverse("dashboard:annotator", args=[study.pk, person.pk]),
            {},
        ),
        "quality": (reverse("dashboard:quality", args=[study.pk]), {}),
        "model": (reverse("dashboard:model"), {}),
    }


def counts(client, study, person):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    out = {}
    for name, (url, headers) in urls(study, person).items():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url, **headers).status_code == 200, name
        out[name] = len(ctx.captured_queries)
    return out


def test_query_counts_are_exact_and_do_not_grow_with_the_study(staff_client):
    from django.db import connection

    small, small_people = build(3, 4)
    small_counts = counts(staff_client, small, small_people[1])
    from rewardmodel.models import ModelVersion

    # Records are protected from deletion: retire the small study's versions.
    ModelVersion.objects.update(is_active=False, status="retired")
    big, big_people = build(12, 20)
    big_counts = counts(staff_client, big, big_people[1])
    assert big_counts == small_counts
    assert big_counts == QUERIES[connection.vendor], str(big_counts)
