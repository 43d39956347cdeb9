"""A claim reads a bounded number of buffers whatever the study's size, the
annotator's history and the length of their ranking (issues 27 and 29), on
both engine paths.

Buffers are counted by PostgreSQL itself: ``auto_explain`` logs every
statement the claim runs with its buffer counts (shared hits and reads; on the
SQL path one statement, whose function scan counts every statement run inside
``palate_claim``), and the test adds them up. Not timed. What grew before:
the page and API claim counted the study's images (every page of them: about
1,700 buffers at 20,000 images) and the annotator's ratings (a heap visit per
rating), and the adaptive claim found its level by walking past every image
the annotator had been dealt and walked a ranking of any length.
"""

import re
from collections import deque
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.utils import timezone

from annotation import selectors, services
from annotation.engine.services.dealing import dealing_policy_set
from annotation.models import Participation
from tests.factories import AnnotatorFactory, StudyFactory, join

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db,
    pytest.mark.usefixtures("engine_path"),
]

TARGET = 5
_BUFFERS = re.compile(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?")


@contextmanager
def buffers_counted():
    """Yields a list that holds, after the block, the shared buffers (hit +
    read) of every statement run in it."""
    connection.ensure_connection()
    raw = connection.connection
    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        for setting, value in (
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_analyze", "on"),
            ("auto_explain.log_buffers", "on"),
            ("auto_explain.log_timing", "off"),
            ("auto_explain.log_nested_statements", "off"),
            ("auto_explain.log_level", "log"),
            ("client_min_messages", "log"),
        ):
            cursor.execute(f"SET LOCAL {setting} = {value}")
    notices, raw.notices = raw.notices, deque()
    out: list[int] = []
    try:
        yield out
    finally:
        logged, raw.notices = list(raw.notices), notices
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL auto_explain.log_min_duration = -1")
            cursor.execute("SET LOCAL client_min_messages = notice")
    for notice in logged:
        if "plan:" not in notice:
            continue
        found = _BUFFERS.search(notice)  # the plan's root: everything below it
        if found:
            out.append(sum(int(n or 0) for n in found.groups()))


def rolled_back():
    """A block whose writes are undone (the cached plans stay warm)."""
    block = transaction.atomic()
    block._from_testcase = True  # the engine's durable blocks may nest here
    return block


class Undo(Exception):
    pass


def study_of(images: int, history: int, *, policy_ranks: int = 0, done=False):
    """A study of ``images`` images (target 5) and an annotator ``ahead`` who
    rated ``history`` of them: the fullest ones (one rating each, nobody else
    has rated them: every image of the fullest level was dealt to them), or
    with ``done`` images that are complete (out of the open queue: only the
    length of their history differs). Written in bulk by PostgreSQL; the
    tallies by the triggers."""
    study = StudyFactory(raters_per_image=TARGET, quota_per_annotator=100_000)
    ahead = join(AnnotatorFactory(), study)
    fresh = join(AnnotatorFactory(), study)
    warm = join(AnnotatorFactory(), study)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO annotation_image (file, sha256, width, height, format,
                prompt, domain, provenance, target_ratings, rating_count,
                lease_count, shuffle, created_at, study_id)
            SELECT 'b/' || g || '.png', md5(%(s)s || ':' || g) || md5(g::text),
                   8, 8, 'PNG', '', '', '{}'::jsonb,
                   CASE WHEN g <= %(h)s THEN %(c)s ELSE %(t)s END,
                   CASE WHEN g <= %(h)s THEN 1 ELSE 0 END, 0,
                   ((g::bigint * 2654435761) %% 2147483647)::int, now(), %(s)s
            FROM generate_series(1, %(n)s) g
            """,
            {
                "s": study.pk,
                "t": TARGET,
                "h": history,
                "n": images,
                "c": 1 if done else TARGET,  # done: a target of 1, reached
            },
        )
        cursor.execute(
            """
            INSERT INTO annotation_assignment (study_id, image_id, annotator_id,
                status, leased_at, shown_at, expires_at, finished_at, dealt_by)
            SELECT %(s)s, i.id, %(a)s, 'submitted', now(), now(),
                   now() + interval '5 minutes', now(), 'fullest-first'
            FROM annotation_image i WHERE i.study_id = %(s)s AND i.rating_count = 1
            """,
            {"s": study.pk, "a": ahead.pk},
        )
        cursor.execute(
            """
            INSERT INTO annotation_rating (study_id, image_id, annotator_id,
                assignment_id, score, time_on_item_ms, is_valid, split, created_at)
            SELECT a.study_id, a.image_id, a.annotator_id, a.id, 3, 1000, true,
                   'train', now()
            FROM annotation_assignment a
            WHERE a.study_id = %(s)s AND a.annotator_id = %(a)s
            """,
            {"s": study.pk, "a": ahead.pk},
        )
        if policy_ranks:
            # A ranking of images outside the band (untouched, while the
            # fullest level is one rating in): the walk meets none it may
            # deal, the worst case, then falls back to fullest-first.
            for who in (ahead, fresh, warm):
                cursor.execute(
                    """
                    INSERT INTO annotation_dealingrank (study_id, annotator_id,
                        image_id, rank, information)
                    SELECT %(s)s, %(a)s, i.id,
                           row_number() OVER (ORDER BY i.id), 1.0
                    FROM (SELECT id FROM annotation_image
                          WHERE study_id = %(s)s AND rating_count = 0
                          ORDER BY id LIMIT %(r)s) i
                    """,
                    {"s": study.pk, "a": who.pk, "r": policy_ranks},
                )
        cursor.execute(
            "ANALYZE annotation_image; ANALYZE annotation_assignment; "
            "ANALYZE annotation_rating; ANALYZE annotation_dealingrank; "
            "ANALYZE annotation_ratingtally; ANALYZE annotation_studytally"
        )
    Participation.objects.filter(study=study).update(started_at=timezone.now())
    if policy_ranks:
        dealing_policy_set(study=study, policy="adaptive", warmup=0, band=0)
    return study, {"ahead": ahead, "fresh": fresh, "warm": warm}


def page_claim(engine_path, annotator, study):
    """What the rating page asks for: a lease and the progress around it (one
    statement on the SQL path; the claim and ``annotator_progress`` on the
    Python path)."""
    if engine_path == "sql":
        page = services.assignment_claim_for_page(
            annotator=annotator, study=study, hold=1
        )
        assert page is not None and len(page.leases) == 1
        return page.leases[0]
    (lease,) = services.assignment_claim(annotator=annotator, study=study)
    selectors.annotator_progress(annotator=annotator, study=study)
    return lease


def claim_buffers(engine_path, study, people, who: str) -> int:
    """Buffers of ``who``'s page claim, after warm claims (plans cached) whose
    writes are rolled back."""
    for _ in range(6):  # past PL/pgSQL's five custom plans
        try:
            with rolled_back():
                page_claim(engine_path, people["warm"], study)
                raise Undo
        except Undo:
            pass
    with buffers_counted() as counted:
        lease = page_claim(engine_path, people[who], study)
    assert lease.image.rating_count == 0 or who == "fresh"
    return sum(counted)


# What a claim may read here when it must look past images: per fill level
# tried, two windows of 32 rows (each an index entry, a heap visit and a probe
# of assignment_unique_pair), plus the function's fixed reads. A walk past the
# 3,000 images an annotator was dealt, or a count of 20,000 images, reads
# thousands.
WINDOWS = 1_200
# Adaptive, in the worst case: the level from 32 rows, 200 ranks of one
# primary-key lookup each, none in the band, then the fullest-first windows.
ADAPTIVE = 2_500


def test_claim_reads_the_same_at_2000_and_20000_images(engine_path):
    small = claim_buffers(engine_path, *study_of(2_000, 0), "fresh")
    large = claim_buffers(engine_path, *study_of(20_000, 0), "fresh")
    # The same rows, through indexes at most one level deeper.
    assert large <= small + 40, (small, large)


def test_claim_reads_the_same_with_0_and_20000_ratings_before(engine_path):
    """The annotator's history (20,000 rated images, complete now) changes
    nothing the claim reads: their count is one row."""
    none = claim_buffers(engine_path, *study_of(25_000, 0, done=True), "ahead")
    many = claim_buffers(engine_path, *study_of(25_000, 20_000, done=True), "ahead")
    assert many <= none + 40, (none, many)


def test_claim_far_ahead_reads_windows_not_the_history(engine_path):
    """Dealt every image of the fullest level (300 or 3,000 of them): the
    claim reads that level's windows, then deals from the next."""
    for history in (300, 3_000):
        cost = claim_buffers(engine_path, *study_of(20_000, history), "ahead")
        assert cost <= WINDOWS, (history, cost)


def test_adaptive_claim_reads_a_bounded_walk_of_any_ranking(engine_path):
    """Rankings of 300 and 3,000 images, none of them in the band (band 0,
    the fullest level one rating in, every ranked image untouched): the claim
    walks the first 200 ranks of either, then deals fullest-first."""
    short = claim_buffers(engine_path, *study_of(6_000, 300, policy_ranks=300), "fresh")
    long = claim_buffers(
        engine_path, *study_of(6_000, 300, policy_ranks=3_000), "fresh"
    )
    assert short <= ADAPTIVE and long <= ADAPTIVE, (short, long)
    assert long <= short + 40, (short, long)


def test_adaptive_claim_of_an_annotator_far_ahead_is_bounded(engine_path):
    """L comes from the first 32 images of the open queue, not from a walk
    past the 300 or 3,000 fullest images the annotator was dealt."""
    for history in (300, 3_000):
        cost = claim_buffers(
            engine_path, *study_of(20_000, history, policy_ranks=300), "ahead"
        )
        assert cost <= ADAPTIVE, (history, cost)


def test_dealing_candidates_read_the_open_queue_not_the_history(engine_path):
    """What a ranking refresh reads (``dealing_candidates``): the study's
    ``limit`` fullest open images, each one heap visit and one probe of the
    annotator's pairs (a few buffers each, the indexes' depth); 20,000 rated
    images before (complete now) add nothing to read. Before: every
    assignment the annotator ever had in the study, then every open image."""
    from annotation.engine.services.dealing import CANDIDATES, dealing_candidates

    study, people = study_of(25_000, 20_000, done=True)
    who = people["ahead"]
    dealing_candidates(study_id=study.pk, annotator_id=who.pk, limit=50)  # warm
    with buffers_counted() as counted:
        got = dealing_candidates(study_id=study.pk, annotator_id=who.pk, limit=50)
    assert len(got) == 50
    assert sum(counted) <= 50 * 8 + 40, sum(counted)  # not the 20,000
    with buffers_counted() as counted:
        got = dealing_candidates(study_id=study.pk, annotator_id=who.pk)
    assert len(got) == CANDIDATES and sum(counted) <= CANDIDATES * 8 + 40
    # Dealt images are left out; the rest are the open queue's first.
    from annotation.models import Assignment, Image

    study, people = study_of(3_000, 300)
    got = dealing_candidates(study_id=study.pk, annotator_id=people["ahead"].pk)
    dealt = set(
        Assignment.objects.filter(annotator=people["ahead"]).values_list(
            "image_id", flat=True
        )
    )
    fullest = list(
        Image.objects.filter(study=study, open_slots__gt=0)
        .order_by("open_slots", "shuffle")
        .values_list("pk", flat=True)[:CANDIDATES]
    )
    assert dealt and not dealt & set(got)
    assert got == sorted(set(fullest) - dealt)
