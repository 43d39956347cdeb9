"""The engine's one-round-trip SQL path (annotation/engine/services/engine_sql.py and
the PL/pgSQL of migration 0005): one query per claim and per rating, the same rows as
the Python path, the same split and time on item."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotation import services
from annotation.models import Assignment, Image, Participation, Rating
from annotation.splits import split_assign
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def annotator(study):
    """An annotator who joined ``study`` through its link."""
    return join(AnnotatorFactory(), study)


def engine_queries(context) -> list[str]:
    return [
        q["sql"]
        for q in context.captured_queries
        if "SAVEPOINT" not in q["sql"].upper() and not quality_control(q["sql"])
    ]


def quality_control(sql: str) -> bool:
    """Quality control's own reads and writes after a rating (its statistics
    row, the study's thresholds; the rating page's due-item check): counted by
    the tests that budget them, not part of the engine's statement."""
    return any(
        t in sql
        for t in (
            "annotation_annotatorquality",
            "annotation_qualityconfig",
            "annotation_streamitem",
        )
    )


def test_sql_helpers_are_inlined():
    """Every LANGUAGE sql helper of the engine must be one the planner inlines:
    one it cannot (a body with FROM, or a stable function inside an immutable
    one) is parsed and planned again in each transaction, which was 12% of
    PostgreSQL's CPU per rating (migration 0015, issue 16)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.proname, p.proargtypes::regtype[]::text[] FROM pg_proc p "
            "JOIN pg_language l ON l.oid = p.prolang "
            "WHERE p.proname LIKE 'palate\\_%%' AND l.lanname = 'sql'"
        )
        helpers = cursor.fetchall()
        assert helpers, "no SQL-language helper to check"
        for k, (name, types) in enumerate(helpers):
            cols = ", ".join(f"a{i} {t}" for i, t in enumerate(types))
            cursor.execute(f"CREATE TEMP TABLE helper_args_{k} ({cols})")
            args = ", ".join(f"t.a{i}" for i in range(len(types)))
            cursor.execute(
                f"EXPLAIN VERBOSE SELECT {name}({args}) FROM helper_args_{k} t"
            )
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert f"{name}(" not in plan, f"{name} is not inlined:\n{plan}"


def test_split_in_sql_is_split_assign(study):
    """The submit's ``palate_split`` (called with ids) hashes the same keys as
    ``split_assign``: the image's sha256, the annotator's key (external id with
    its source where there is one, else the public id)."""
    images = make_images(study, 40)
    people = [AnnotatorFactory() for _ in range(25)] + [
        AnnotatorFactory(source="prolific", external_id=f"PID{i:04d}")
        for i in range(25)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i, a, palate_split(%s, i, a) FROM unnest(%s::bigint[]) i, "
            "unnest(%s::bigint[]) a",
            [study.pk, [im.pk for im in images], [p.pk for p in people]],
        )
        rows = cursor.fetchall()
    assert len(rows) == len(images) * len(people)
    sha = {im.pk: im.sha256 for im in images}
    key = {p.pk: p.split_key for p in people}
    assert key[people[-1].pk] == "prolific:PID0024"
    seen = set()
    for i, a, split in rows:
        assert split == split_assign(image_key=sha[i], annotator_key=key[a])
        seen.add(split)
    assert len(seen) == 5  # every split occurs: the comparison means something


def test_service_claim_and_submit_are_one_statement_each(study, annotator):
    make_images(study, 3)
    services.assignment_claim(annotator=annotator, study=study)  # participation
    with CaptureQueriesContext(connection) as claim:
        lease = services.assignment_claim(annotator=annotator, study=study, hold=2)
    assert len(lease) == 2
    assert [q.split("(")[0] for q in engine_queries(claim)] == [
        "SELECT * FROM palate_claim"
    ]
    with CaptureQueriesContext(connection) as submit:
        rating, created = services.rating_submit(
            assignment_id=lease[0].pk, annotator=annotator, score=4
        )
    assert created and rating.pk == Rating.objects.get().pk
    assert [q.split("(")[0] for q in engine_queries(submit)] == [
        "SELECT * FROM palate_submit"
    ]


def test_api_claim_and_rating_are_one_query_each(
    client, study, annotator, django_assert_num_queries
):
    make_images(study, 3)
    services.assignment_claim(annotator=annotator, study=study)
    services.rating_submit(
        assignment_id=Assignment.objects.get().pk, annotator=annotator, score=2
    )
    token = Token.objects.create(user=annotator.user)
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    url = f"/api/v1/studies/{study.pk}/assignments/next/"
    with django_assert_num_queries(1):
        r = client.post(url, **auth)
    assert r.status_code == 200
    # One statement, quality control's bookkeeping included (migration 0011).
    with django_assert_num_queries(1):
        r = client.post(
            f"/api/v1/assignments/{r.json()['id']}/rating/",
            {"score": 6},
            content_type="application/json",
            **auth,
        )
    assert r.status_code == 201 and r.json()["score"] == 6


def _first_api_claim(client, settings, sql: bool):
    """A participant who consented but never claimed (not started) asks the API
    for an item: (status, statements, started when leased, shown when leased,
    the answer's status, its lease window)."""
    settings.PALATE_SQL_ENGINE = sql
    study = StudyFactory(lease_seconds=90)
    make_images(study, 2)
    annotator = join(AnnotatorFactory(), study)
    part = Participation.objects.get(annotator=annotator, study=study)
    assert part.started_at is None
    token = Token.objects.create(user=annotator.user)
    url = f"/api/v1/studies/{study.pk}/assignments/next/"
    with CaptureQueriesContext(connection) as context:
        r = client.post(url, HTTP_AUTHORIZATION=f"Token {token.key}")
    part.refresh_from_db()
    lease = Assignment.objects.get(annotator=annotator)
    body = r.json()
    return (
        r.status_code,
        len(engine_queries(context)),
        part.started_at == lease.leased_at,
        lease.shown_at == lease.leased_at,
        body["status"],
        lease.expires_at - lease.leased_at,
    )


def test_api_first_claim_starts_the_participant_in_one_statement(client, settings, db):
    """Migration 0031: the API's first claim no longer leaves the statement for
    the Python path (~20 ms of CPU per participant), and leaves what it did."""
    by_sql = _first_api_claim(client, settings, sql=True)
    by_python = _first_api_claim(client, settings, sql=False)
    assert by_sql[1] == 1 and by_python[1] > 3
    assert by_sql[:1] + by_sql[2:] == by_python[:1] + by_python[2:]
    assert by_sql == (200, 1, True, True, "leased", timedelta(seconds=90))


def _scenario(settings, sql: bool):
    """Claims, ratings, a retry, a skip and an expired lease for two annotators,
    at fixed times with the dealer seeded per claim. Returns the rows it left,
    with images named by their position in the study."""
    settings.PALATE_SQL_ENGINE = sql
    study = StudyFactory(raters_per_image=2, quota_per_annotator=4, lease_seconds=60)
    images = make_images(study, 5, start=100 if sql else 200)
    index = {img.pk: n for n, img in enumerate(images)}
    for img, n in index.items():  # the same "random" order in both studies
        Image.objects.filter(pk=img).update(shuffle=(n * 7919) % 10007)
    people = [join(AnnotatorFactory(), study) for _ in range(2)]
    t0 = timezone.now().replace(microsecond=123457)
    step = 0

    def claim(who, hold, at):
        nonlocal step
        step += 1
        services.engine_seed(seed=step)  # the dealer the engine draws from
        return services.assignment_claim(
            annotator=who, study=study, hold=hold, now=t0 + at
        )

    def rate(who, lease, score, at):
        return services.rating_submit(
            assignment_id=lease.pk, annotator=who, score=score, now=t0 + at
        )

    a, b = people
    first = claim(a, 2, timedelta(0))
    rate(a, first[0], 3, timedelta(seconds=1.234567))
    rate(a, first[0], 3, timedelta(seconds=2))  # a retry: no-op
    second = claim(a, 2, timedelta(seconds=3))
    services.assignment_skip(
        assignment_id=second[0].pk, annotator=a, now=t0 + timedelta(seconds=3)
    )
    claim(b, 1, timedelta(seconds=4))
    late = claim(b, 1, timedelta(seconds=5))[0]
    rate(b, late, 7, timedelta(seconds=200))  # lease ran out, image still has room
    for n in range(3):
        lease = claim(b, 1, timedelta(seconds=300 + n))
        if lease:
            rate(b, lease[0], 1 + n, timedelta(seconds=301 + n, microseconds=9))
    assignments = sorted(
        (
            people.index(x.annotator),
            index[x.image_id],
            x.status,
            x.leased_at - t0,
            x.shown_at and x.shown_at - t0,
            x.expires_at - t0,
            x.finished_at and x.finished_at - t0,
        )
        for x in Assignment.objects.filter(study=study).select_related("annotator")
    )
    ratings = sorted(
        (
            people.index(r.annotator),
            index[r.image_id],
            r.score,
            r.time_on_item_ms,
            r.split
            == split_assign(
                image_key=r.image.sha256, annotator_key=r.annotator.split_key
            ),
        )
        for r in Rating.objects.filter(study=study).select_related("annotator", "image")
    )
    counters = [
        (img.rating_count, img.lease_count)
        for img in sorted(study.images.all(), key=lambda i: index[i.pk])
    ]
    started = [
        p.started_at - t0
        for p in Participation.objects.filter(study=study).order_by("annotator_id")
    ]
    return assignments, ratings, counters, started


def test_sql_and_python_paths_leave_the_same_rows(settings, db):
    by_sql = _scenario(settings, sql=True)
    by_python = _scenario(settings, sql=False)
    assert by_sql == by_python
    assignments, ratings, _, _ = by_sql
    assert len(ratings) >= 4 and all(ok for *_, ok in ratings)
    assert {a[2] for a in assignments} >= {"submitted", "skipped", "leased"}


def test_paths_are_really_different(settings, db, django_assert_max_num_queries):
    """The comparison above is not Python against itself: with the setting off,
    a claim is several statements again."""
    settings.PALATE_SQL_ENGINE = False
    study = StudyFactory(raters_per_image=2)
    make_images(study, 2)
    annotator = join(AnnotatorFactory(), study)
    services.assignment_claim(annotator=annotator, study=study)
    with CaptureQueriesContext(connection) as context:
        services.assignment_claim(annotator=annotator, study=study, hold=2)
    assert len(engine_queries(context)) > 3
    assert not any("palate_claim" in q for q in engine_queries(context))


def test_htmx_rating_round_trip_is_lean_and_writes_no_session(client, study):
    """A key press: the rating (quality control included) and the next two
    leases with the progress are one statement each, the session is read but
    never written, and the fragment comes back."""
    make_images(study, 6, start=300)
    r = client.post(
        reverse("annotation:join", args=[study.slug]),
        {"t": study.invite_token, "agree": "on"},
    )
    assert r.status_code == 302
    client.post(reverse("annotation:start", args=[study.slug]))
    page = client.get(reverse("annotation:rate", args=[study.slug])).content.decode()
    for score in (3, 5):
        current = re.search(r'data-assignment="([\w-]{22})"', page).group(1)
        url = reverse("annotation:item_rate", args=[study.slug, current])
        with CaptureQueriesContext(connection) as context:
            r = client.post(url, {"score": str(score)}, HTTP_HX_REQUEST="true")
        assert r.status_code == 200 and "sessionid" not in r.cookies
        page = r.content.decode()
        sql = [
            q["sql"]
            for q in context.captured_queries
            if "SAVEPOINT" not in q["sql"].upper()
        ]
        assert not [q for q in sql if "django_session" in q and "SELECT" not in q]
        assert [q.split("(")[0] for q in sql if "palate_" in q] == [
            "SELECT * FROM palate_submit",
            "SELECT * FROM palate_claim",
        ]
        # study, session, user, annotator, rating, claim with progress: nothing
        # else (participation, progress and the due-item check are in the claim)
        assert len(sql) == 6, sql
        assert f"{1 + [3, 5].index(score)} of " in page  # the progress shown
    assert Rating.objects.filter(study=study).count() == 2


def test_hot_tables_have_no_index_another_one_starts_with():
    """Every rating writes Image twice and Assignment and Rating once: an index
    whose columns lead another (plain) index is pure write cost."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, i.relname, x.indkey::int2[], x.indpred IS NOT NULL
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class c ON c.oid = x.indrelid
            WHERE c.relname IN ('annotation_image', 'annotation_assignment',
                                'annotation_rating', 'annotation_participation',
                                'annotation_annotatorquality')
            """
        )
        rows = cursor.fetchall()
    assert len(rows) >= 15
    redundant = [
        (table, name, other)
        for table, name, cols, partial in rows
        for table2, other, cols2, partial2 in rows
        if table == table2
        and name != other
        and not partial2
        and len(cols) < len(cols2)
        and list(cols2[: len(cols)]) == list(cols)
        and not name.endswith("_pkey")
    ]
    assert not redundant, redundant
