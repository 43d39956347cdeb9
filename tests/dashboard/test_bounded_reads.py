"""The annotators page reads no rating at all: the counts it shows (all and
valid) are the ones the database keeps in ``RatingTally`` (migration 0027).
Before issue 29 it counted every rating of the study on every render, then
only the ratings of the annotators it showed. Checked on PostgreSQL by the
rows its scans of the ratings table return in this transaction
(``pg_stat_xact_*``), with sequential scans off so the size of these tiny
tables cannot make a scan of everything the cheapest plan. Nothing is
timed."""

import pytest
from django.db import connection
from django.urls import reverse

from dashboard import selectors
from tests.factories import AnnotatorFactory, StudyFactory, make_images

from .conftest import rate_all

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def rating_rows_read() -> int:
    """Rows the ratings table's scans returned so far in this transaction:
    tuples of sequential scans and index entries of index (only) scans."""
    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT pg_stat_get_xact_tuples_returned('annotation_rating'::regclass)
                   + COALESCE(SUM(pg_stat_get_xact_tuples_returned(indexrelid)), 0)
              FROM pg_index WHERE indrelid = 'annotation_rating'::regclass
            """
        )
        return int(cur.fetchone()[0])


def test_rows_read_counts_a_scan_of_the_study():
    """The measure sees a read of the study's ratings (so the test below can
    fail): sequential scans off, a count of the study goes through an index."""
    study = StudyFactory(raters_per_image=2, quota_per_annotator=3)
    make_images(study, 3)
    rate_all(study, [AnnotatorFactory() for _ in range(2)], lambda i, img: 3)
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
    before = rating_rows_read()
    from annotation.models import Rating

    assert Rating.objects.filter(study=study).count() == 6
    assert rating_rows_read() - before >= 6


def named(annotators, prefix):
    """Public ids in a known order: the page sorts by them."""
    for n, a in enumerate(annotators):
        a.public_id = f"a-{prefix}{n:011x}"
        a.save(update_fields=["public_id"])
    return annotators


def page_reads(client, url) -> int:
    with connection.cursor() as cur:
        # Statistics as autovacuum keeps them: the planner knows how the
        # study's ratings divide among annotators.
        cur.execute("ANALYZE annotation_rating")
    before = rating_rows_read()
    response = client.get(url)
    assert response.status_code == 200
    return rating_rows_read() - before


def test_annotators_page_reads_no_rating(staff_client, monkeypatch):
    monkeypatch.setattr(selectors, "PAGE_SIZE", 2)
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
    study = StudyFactory(raters_per_image=8, quota_per_annotator=6)
    make_images(study, 6)
    shown = named([AnnotatorFactory() for _ in range(2)], "0")
    rate_all(study, shown, lambda i, img: 1 + (img.pk + i) % 7)
    url = reverse("dashboard:annotators", args=[study.pk]) + "?sort=annotator"
    first = page_reads(staff_client, url)
    # Six more annotators rate everything: three times the ratings, none of
    # them by the two annotators the page shows (their ids sort after).
    others = named([AnnotatorFactory() for _ in range(6)], "f")
    rate_all(study, others, lambda i, img: 1 + (img.pk * (i + 2)) % 7)
    body = staff_client.get(url).content.decode()
    assert all(a.public_id in body for a in shown)
    assert not any(a.public_id in body for a in others)
    assert page_reads(staff_client, url) == first
    # No rating row nor index entry: the counts come from the tally.
    assert first == 0
