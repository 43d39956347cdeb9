"""Rate and take the next (``POST /api/v1/assignments/{token}/rating/?next=1``):
one request answers what a rating followed by a claim answers, on both engine
paths (``engine_path``: PostgreSQL's one statement, ``palate_submit_next``, and
the Python services), in the fast view and in the DRF view.

Each case is played twice in the same study: by one annotator with two requests
(rating, then ``assignments/next/``) and by another with one. The statuses, the
errors and the shape of every answer must agree; the ``next`` of the one
request must be exactly what a claim made right after answers (a claim returns
the lease its caller holds)."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotation import services
from annotation.models import (
    Annotator,
    Assignment,
    Image,
    Participation,
    Rating,
    StreamItem,
    Study,
)
from annotation.splits import split_assign
from tests.annotation.test_concurrency import assert_exact
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images, png_bytes

pytestmark = pytest.mark.django_db

# Per-annotator values: compared by type, not value, between two annotators.
_OWN = {"id", "assignment", "image_url", "leased_at", "expires_at", "created_at"}
_OWN |= {"time_on_item_ms"}


def api(annotator) -> Client:
    token, _ = Token.objects.get_or_create(user=annotator.user)
    return Client(HTTP_AUTHORIZATION=f"Token {token.key}")


def claim(client, study):
    r = client.post(f"/api/v1/studies/{study.pk}/assignments/next/")
    return r.status_code, (r.json() if r.content else None)


def rate(client, item: str, score, query: str = "", **kw):
    r = client.post(
        f"/api/v1/assignments/{item}/rating/{query}",
        {"score": score},
        content_type="application/json",
        **kw,
    )
    return r.status_code, r.json()


def two_requests(client, study, item: str, score):
    """What a client doing it the old way learns: the rating's answer and, when
    it was recorded, the claim's, combined as one ``?next=1`` answer."""
    status, body = rate(client, item, score)
    if status not in (200, 201):
        return status, body  # a refused rating: the client claims nothing
    got, lease = claim(client, study)
    if got in (200, 204):
        return status, {**body, "next": lease}
    error = {**lease, "status": got}
    return status, {**body, "next": None, "next_error": error}


def shape(value):
    """The answer with each annotator's own values replaced by their type."""
    if isinstance(value, dict):
        return {
            k: type(v).__name__ if k in _OWN else shape(v) for k, v in value.items()
        }
    return value


def same(one, other):
    assert one[0] == other[0], (one, other)
    assert shape(one[1]) == shape(other[1]), (one, other)


@pytest.fixture
def pair(study, engine_path):
    """Two annotators of ``study`` (3 raters, quota 50), each holding a lease."""
    make_images(study, 6)
    people = [join(AnnotatorFactory(), study) for _ in range(2)]
    clients = [api(p) for p in people]
    items = [claim(c, study)[1]["id"] for c in clients]
    return people, clients, items


def test_normal_rating_answers_the_next_claim(study, pair):
    (a, b), (old, new), (item_a, item_b) = pair
    expected = two_requests(old, study, item_a, 4)
    got = rate(new, item_b, 4, "?next=1")
    assert got[0] == 201
    same(got, expected)
    assert got[1]["next"]["id"] != item_b
    # Exactly what a claim made now answers (the lease b holds).
    assert claim(new, study) == (200, got[1]["next"])
    rating = Rating.objects.get(annotator=b)
    assert (rating.score, rating.assignment.status) == (4, "submitted")
    assert got[1]["time_on_item_ms"] == rating.time_on_item_ms
    assert Assignment.objects.filter(annotator=b, status="leased").count() == 1


def test_rate_next_is_one_statement_on_the_sql_path(study, pair, engine_path):
    (_, b), (_, new), (_, item_b) = pair
    with CaptureQueriesContext(connection) as ctx:
        got = rate(new, item_b, 3, "?next=1")
    assert got[0] == 201 and got[1]["next"] is not None
    if engine_path == "sql":
        assert len(ctx.captured_queries) == 1
        assert "palate_submit_next(" in ctx.captured_queries[0]["sql"]
    else:
        assert not any("palate_" in q["sql"] for q in ctx.captured_queries)


def test_last_image_answers_next_null(engine_path):
    study = StudyFactory(raters_per_image=2, quota_per_annotator=1)
    make_images(study, 2)
    people = [join(AnnotatorFactory(), study) for _ in range(2)]
    old, new = api(people[0]), api(people[1])
    item_a, item_b = claim(old, study)[1]["id"], claim(new, study)[1]["id"]
    expected = two_requests(old, study, item_a, 5)
    got = rate(new, item_b, 5, "?next=1")
    assert got == (201, {**got[1], "next": None})
    same(got, expected)
    assert claim(new, study) == (204, None)
    assert not Assignment.objects.filter(status="leased").exists()


def test_repeat_rating_answers_200_and_the_lease_held(study, pair):
    (_, b), (old, new), (item_a, item_b) = pair
    first = rate(new, item_b, 6, "?next=1")
    assert first[0] == 201
    two_requests(old, study, item_a, 6)
    expected = two_requests(old, study, item_a, 6)  # the retry, the old way
    again = rate(new, item_b, 6, "?next=1")
    assert again[0] == 200
    same(again, expected)
    # The retry deals nothing new: the next item is the one already dealt.
    assert again[1]["next"] == first[1]["next"]
    assert {k: again[1][k] for k in first[1]} == first[1]
    assert Rating.objects.filter(annotator=b).count() == 1
    assert Assignment.objects.filter(annotator=b).count() == 2
    # Another score: 409 as without ?next=1, and nothing more dealt.
    expected = two_requests(old, study, item_a, 2)
    other = rate(new, item_b, 2, "?next=1")
    assert other == expected and other[0] == 409
    assert Assignment.objects.filter(annotator=b).count() == 2


def test_bad_score_is_refused_and_nothing_claimed(study, pair):
    (a, b), (old, new), (item_a, item_b) = pair
    before = Assignment.objects.count()
    expected = two_requests(old, study, item_a, 99)
    got = rate(new, item_b, 99, "?next=1")
    assert got[0] == 400 and got[1]["code"] == "invalid"
    assert got == expected
    assert Assignment.objects.count() == before
    # With the lease run out a claim would deal a new one: none is dealt.
    _expire(b)
    assert rate(new, item_b, 99, "?next=1") == expected
    assert Assignment.objects.count() == before
    assert not Rating.objects.exists()


def _expire(annotator):
    past = timezone.now() - timedelta(minutes=10)
    Assignment.objects.filter(annotator=annotator).update(
        leased_at=past, shown_at=past, expires_at=past + timedelta(minutes=1)
    )


def test_wrong_annotator_is_refused_and_nothing_claimed(study, pair):
    (a, b), (old, new), (item_a, item_b) = pair
    before = list(Assignment.objects.values_list("pk", "status"))
    # Each tries the other's item.
    expected = two_requests(old, study, item_b, 3)
    got = rate(new, item_a, 3, "?next=1")
    assert got == expected == (404, {"detail": "No such item.", "code": "not_found"})
    assert list(Assignment.objects.values_list("pk", "status")) == before
    # A member holding no lease, whom a claim would deal one: none is dealt.
    other = join(AnnotatorFactory(), study)
    assert rate(api(other), item_a, 3, "?next=1") == got
    assert list(Assignment.objects.values_list("pk", "status")) == before
    assert not Rating.objects.exists()


def test_closed_study_is_refused_and_nothing_claimed(study, pair):
    (a, b), (old, new), (item_a, item_b) = pair
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    _expire(b)
    before = Assignment.objects.count()
    expected = two_requests(old, study, item_a, 3)
    got = rate(new, item_b, 3, "?next=1")
    assert got == expected
    assert got[0] == 403 and "not open" in got[1]["detail"]
    assert Assignment.objects.count() == before
    assert not Rating.objects.exists()


@pytest.mark.parametrize("row", ["annotator", "participation"])
def test_a_paused_or_excluded_annotator_is_refused_and_nothing_claimed(
    study, pair, row
):
    """Paused, or excluded from the study, in the row only (no slot
    released): only the checks of the annotator's and the participation's
    status can refuse, which ``palate_submit_next`` makes on the rows it
    locks (``p_held``) and the Python path makes itself."""
    (a, b), (old, new), (item_a, item_b) = pair
    if row == "annotator":
        Annotator.objects.filter(pk__in=[a.pk, b.pk]).update(status="paused")
    else:
        Participation.objects.filter(study=study).update(
            status="excluded", excluded_at=timezone.now()
        )
    before = list(Assignment.objects.values_list("pk", "status"))
    expected = two_requests(old, study, item_a, 3)
    got = rate(new, item_b, 3, "?next=1")
    assert got == expected
    assert got[0] == 403 and got[1]["code"] == "annotator_not_active"
    assert list(Assignment.objects.values_list("pk", "status")) == before
    assert not Rating.objects.exists()
    # The rows back, so the integrity check after the test has nothing to say.
    Annotator.objects.filter(pk__in=[a.pk, b.pk]).update(status="active")
    Participation.objects.filter(study=study).update(status="active", excluded_at=None)


@pytest.mark.django_db(transaction=True)  # the pause runs on commit
def test_a_pause_this_rating_brings_on_comes_as_next_error(study, pair):
    """Quality control pauses the annotator after the rating that crosses its
    hard threshold: the rating is recorded (201) and the claim refused, as the
    old way's second request is."""
    (a, b), (old, new), (item_a, item_b) = pair
    services.quality_config_update(
        study=study,
        auto_pause=True,
        min_evidence=1,
        too_fast_ms=3_600_000,
        hard_fast_share=0.5,
    )
    expected = two_requests(old, study, item_a, 2)
    got = rate(new, item_b, 2, "?next=1")
    assert got[0] == 201
    assert got[1]["next"] is None
    assert got[1]["next_error"]["code"] == "annotator_not_active"
    assert got[1]["next_error"]["status"] == 403
    same(got, expected)
    b.refresh_from_db()
    assert b.status == Annotator.Status.PAUSED
    assert Rating.objects.filter(annotator=b).count() == 1
    assert not Assignment.objects.filter(annotator=b, status="leased").exists()


def test_uncounted_items_are_dealt_on_the_page_schedule(study, pair):
    """With an attention check after every rating, the claim inside the one
    request finds an item due (``item_due``) and deals as the claim endpoint
    does: each ``next`` is what a claim answers right after, checks included."""
    (a, b), (old, new), (item_a, item_b) = pair
    services.quality_config_update(study=study, attention_check_rate=1.0)
    services.attention_check_create(study=study, data=png_bytes(7), expected_min=1)
    old_way, one_way = [], []
    for _ in range(4):
        got = two_requests(old, study, item_a, 3)
        old_way.append(got)
        item_a = got[1]["next"]["id"]
        got = rate(new, item_b, 3, "?next=1")
        assert claim(new, study) == (200, got[1]["next"])
        one_way.append(got)
        item_b = got[1]["next"]["id"]
    for one, other in zip(one_way, old_way, strict=True):
        same(one, other)
    shown = StreamItem.objects.filter(annotator=b, shown_at__isnull=False)
    assert shown.exists()  # a check was dealt through next
    assert (
        shown.count()
        == StreamItem.objects.filter(annotator=a, shown_at__isnull=False).count()
    )


def _calls(context, function: str) -> int:
    return sum(function in q["sql"] for q in context.captured_queries)


@pytest.mark.postgres
def test_each_part_runs_once_when_python_takes_over(settings):
    """The submit handed to Python (a retry): ``palate_submit_next`` once, the
    Python rating, then the claim as the claim endpoint makes it. The claim
    handed to Python (only an overdue lease of another is left: the Python path
    sweeps it): the rating kept, ``palate_claim`` not run again."""
    settings.PALATE_SQL_ENGINE = True
    study = StudyFactory(raters_per_image=1, quota_per_annotator=5)
    make_images(study, 2)
    a, b = (join(AnnotatorFactory(), study) for _ in range(2))
    item_a, item_b = claim(api(a), study)[1]["id"], claim(api(b), study)[1]["id"]
    _expire(a)
    with CaptureQueriesContext(connection) as ctx:
        got = rate(api(b), item_b, 4, "?next=1")
    assert got[0] == 201
    assert _calls(ctx, "palate_submit_next(") == 1
    assert _calls(ctx, "palate_claim(") == 0 and _calls(ctx, "palate_submit(") == 0
    # a's overdue image, swept and dealt to b.
    lease = Assignment.objects.get(annotator=b, status="leased")
    assert lease.image_id == Assignment.objects.get(annotator=a).image_id
    assert claim(api(b), study) == (200, got[1]["next"])
    with CaptureQueriesContext(connection) as ctx:
        again = rate(api(b), item_b, 4, "?next=1")
    assert again[0] == 200 and again[1]["next"] == got[1]["next"]
    assert _calls(ctx, "palate_submit_next(") == 1
    assert _calls(ctx, "palate_claim(") == 1 and _calls(ctx, "palate_submit(") == 0
    assert Rating.objects.filter(annotator=b).count() == 1
    assert item_a  # a's lease expired unrated


@pytest.mark.parametrize("query", ["?next=yes", "?next=2", "?next=1&next=1"])
def test_other_next_values_are_refused_before_anything(study, pair, query):
    (_, b), (_, new), (_, item_b) = pair
    before = list(Assignment.objects.values_list("pk", "status"))
    got = rate(new, item_b, 3, query)
    assert got == (400, {"detail": "next must be 0 or 1.", "code": "invalid"})
    assert list(Assignment.objects.values_list("pk", "status")) == before
    assert not Rating.objects.exists()


@pytest.mark.parametrize("query", ["?next=0", "?other=1"])
def test_without_next_1_the_answer_is_the_rating_alone(study, pair, query):
    (a, b), (old, new), (item_a, item_b) = pair
    plain = rate(old, item_a, 3)
    got = rate(new, item_b, 3, query)
    same(got, plain)
    assert "next" not in got[1]
    assert Assignment.objects.filter(annotator=b).count() == 1


def test_the_drf_view_answers_alike(study, pair, staff_user):
    """The DRF view (a session's request, or anything the fast view hands it)
    answers ``?next=1`` as the fast view does."""
    (a, b), (old, new), (item_a, item_b) = pair
    session = Client()
    session.force_login(staff_user)  # a cookie, no token: the DRF view answers
    item_s = claim(session, study)[1]["id"]
    fast = rate(old, item_a, 5, "?next=1")
    slow = rate(session, item_s, 5, "?next=1")
    same(slow, fast)
    assert claim(session, study) == (200, slow[1]["next"])
    again = rate(session, item_s, 5, "?next=1")
    assert again[0] == 200 and again[1]["next"] == slow[1]["next"]
    bad = rate(session, item_s, 5, "?next=x")
    assert bad == (400, {"detail": "next must be 0 or 1.", "code": "invalid"})
    refused = rate(session, item_s, 99, "?next=1")
    assert refused[0] == 400
    assert Assignment.objects.filter(annotator__user=staff_user).count() == 2


def test_schema_documents_next(client, staff_user):
    client.force_login(staff_user)
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    rate_op = schema["paths"]["/api/v1/assignments/{token}/rating/"]["post"]
    (param,) = (p for p in rate_op["parameters"] if p["name"] == "next")
    assert param["in"] == "query" and param["schema"]["enum"] == [0, 1]
    ref = rate_op["responses"]["201"]["content"]["application/json"]["schema"]
    name = ref["$ref"].rsplit("/", 1)[-1]
    props = schema["components"]["schemas"][name]["properties"]
    assert {"assignment", "score", "next", "next_error"} <= set(props)
    assert props["next"]["nullable"] is True
    assert "Assignment" in json.dumps(props["next"])


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_many_threads_rating_and_taking_the_next_fill_exactly():
    """16 threads, each driving its annotators through ``?next=1`` only (one
    claim to start, then one request per rating) on PostgreSQL's one statement:
    every image ends with exactly its 15 ratings, none over."""
    study = StudyFactory(raters_per_image=15, quota_per_annotator=40)
    make_images(study, 40)
    people = [join(AnnotatorFactory(), study) for _ in range(48)]
    tokens = [Token.objects.create(user=p.user).key for p in people]
    errors, counts, lock = [], {"ratings": 0}, threading.Lock()

    def worker(mine):
        client = [Client(HTTP_AUTHORIZATION=f"Token {key}") for key in mine]
        try:
            items = {}
            for i, c in enumerate(client):
                status, lease = claim(c, study)
                if status == 200:
                    items[i] = lease["id"]
            while items:
                for i in list(items):
                    status, body = rate(client[i], items[i], 1 + i % 7, "?next=1")
                    if status != 201:
                        errors.append((status, body))
                        items.pop(i)
                        continue
                    with lock:
                        counts["ratings"] += 1
                    if body["next"] is None:
                        items.pop(i)
                    else:
                        items[i] = body["next"]["id"]
        except Exception as exc:  # surfaced by the main thread's assertion
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=worker, args=(tokens[i::16],)) for i in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert counts["ratings"] == 40 * 15
    assert not Image.objects.filter(study=study, rating_count__gt=15).exists()
    assert_exact(study, 15)
    # Each rating's split from the keys the one statement read (its split key,
    # the image's sha256 its UPDATE returned): the splits' rule, as in Python.
    ratings = Rating.objects.filter(study=study).select_related("annotator", "image")
    assert len({r.split for r in ratings}) > 1
    assert all(
        r.split
        == split_assign(image_key=r.image.sha256, annotator_key=r.annotator.split_key)
        for r in ratings
    )
