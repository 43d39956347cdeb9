"""The plain-Django fast path of the two hot API endpoints
(annotation/engine/api/hot.py): the same answers as the DRF views, fewer queries, and
the DRF view for the rest."""

import json

import pytest
from django.db import connection
from django.test import Client, RequestFactory
from rest_framework.authtoken.models import Token

from annotation import services
from annotation.api.serializers import AssignmentSerializer, RatingSerializer
from annotation.engine.api import views
from annotation.engine.services.items import Answer, shown_lease
from annotation.models import Assignment, Image, Rating
from tests.factories import AnnotatorFactory, join, make_images
from tests.items import row_of, token_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def annotator(study):
    """An annotator who joined ``study`` through its link."""
    return join(AnnotatorFactory(), study)


def token_client(annotator) -> Client:
    token, _ = Token.objects.get_or_create(user=annotator.user)
    return Client(HTTP_AUTHORIZATION=f"Token {token.key}")


def next_url(study):
    return f"/api/v1/studies/{study.pk}/assignments/next/"


def rating_url(assignment_id):
    return f"/api/v1/assignments/{assignment_id}/rating/"


def test_claim_answers_exactly_what_the_serializer_would(study, annotator, rf):
    make_images(study, 2)
    r = token_client(annotator).post(next_url(study))
    assert r.status_code == 200 and r["Content-Type"] == "application/json"
    lease = row_of(r.json()["id"])
    request = rf.post(next_url(study))  # same host: testserver
    expected = AssignmentSerializer(shown_lease(lease), context={"request": request})
    expected = expected.data
    assert r.json() == json.loads(json.dumps(expected))


def test_rating_answers_exactly_what_the_serializer_would(study, annotator):
    make_images(study, 1)
    api = token_client(annotator)
    a = api.post(next_url(study)).json()
    r = api.post(rating_url(a["id"]), {"score": 5}, content_type="application/json")
    assert r.status_code == 201
    rating = Rating.objects.get()
    answer = Answer(
        a["id"],
        rating.study_id,
        rating.score,
        rating.time_on_item_ms,
        rating.created_at,
        True,
    )
    expected = RatingSerializer(answer).data
    assert r.json() == json.loads(json.dumps(expected))
    form = "application/x-www-form-urlencoded"
    again = api.post(rating_url(a["id"]), "score=5", content_type=form)
    assert again.status_code == 200 and again.json() == r.json()
    other = api.post(rating_url(a["id"]), {"score": 6}, content_type="application/json")
    assert other.status_code == 409
    assert other.json()["code"] == "conflict"
    assert "already rated" in other.json()["detail"]


@pytest.mark.parametrize("sql_engine", [True, False], ids=["sql", "python"])
def test_fast_path_is_taken_with_fewer_queries(
    study, annotator, django_assert_num_queries, monkeypatch, settings, sql_engine
):
    settings.PALATE_SQL_ENGINE = sql_engine
    one_statement = sql_engine and connection.vendor == "postgresql"
    make_images(study, 3)
    # The pick starts at a random shuffle key and wraps around (a second query)
    # when nothing lies above it; keys at the top make it one query every time.
    Image.objects.filter(study=study).update(shuffle=2**31 - 1)

    def refuse(*args, **kwargs):
        raise AssertionError("the DRF view was called")

    api = token_client(annotator)
    api.post(next_url(study))  # participation exists now
    a = services.assignment_claim(annotator=annotator, study=study)[0]
    services.rating_submit(assignment_id=a.pk, annotator=annotator, score=3)
    monkeypatch.setattr(views, "assignment_next", refuse)
    monkeypatch.setattr(views, "rating_create", refuse)
    # Exact counts, each with its answer and effect checked (an early 500 does
    # fewer queries). token+user+annotator, study, then the engine: annotator
    # FOR SHARE, participation lock, live leases, quota count, pick, slot
    # update, insert, savepoint pair, the ratings count and the stream items
    # due (items.item_next). The SQL engine: one statement in all (it says that
    # no uncounted item is due).
    with django_assert_num_queries(1 if one_statement else 13):
        claimed = api.post(next_url(study))
        assert claimed.status_code == 200
    lease = row_of(claimed.json()["id"])
    assert (lease.annotator_id, lease.status) == (annotator.pk, "leased")
    assert lease.image.lease_count == 1
    # token+user+annotator, annotator FOR SHARE, assignment lock, image update,
    # insert, status, savepoint pair, quality control's two (lock its
    # statistics row, with the study's thresholds and the image's other ratings
    # in that query; save it). The SQL engine: one statement for all of it.
    with django_assert_num_queries(1 if one_statement else 10):
        r = api.post(
            rating_url(token_of(lease)), {"score": 4}, content_type="application/json"
        )
        assert r.status_code == 201
    assert Rating.objects.get(assignment=lease).score == 4
    lease.refresh_from_db()
    assert lease.status == "submitted"
    assert (lease.image.rating_count, lease.image.lease_count) == (1, 0)


def test_engine_errors_keep_the_envelope(study, annotator):
    make_images(study, 1)
    api = token_client(annotator)
    intruder = token_client(AnnotatorFactory())
    a = api.post(next_url(study)).json()
    url = rating_url(a["id"])
    r = intruder.post(url, {"score": 3}, content_type="application/json")
    assert r.status_code == 404
    assert r.json() == {"detail": "No such item.", "code": "not_found"}
    r = api.post(rating_url(a["id"]), {"score": 99}, content_type="application/json")
    assert r.status_code == 400 and r.json()["code"] == "invalid"
    services.annotator_set_status(annotator=annotator, status="paused")
    r = api.post(next_url(study))
    assert r.status_code == 403 and r.json()["code"] == "annotator_not_active"
    assert not Rating.objects.exists()


@pytest.mark.parametrize(
    "body, content_type",
    [
        ({"score": "nice"}, "application/json"),
        ({}, "application/json"),
        ({"score": True}, "application/json"),
        ("{bad", "application/json"),
        ("score=x", "application/x-www-form-urlencoded"),
        ("5", "text/plain"),
    ],
)
def test_other_bodies_get_the_drf_answer(study, annotator, body, content_type):
    make_images(study, 1)
    token = Token.objects.create(user=annotator.user)
    a = token_client(annotator).post(next_url(study)).json()
    plain = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    fast = plain.post(rating_url(a["id"]), body, content_type=content_type)
    # The DRF view alone: what the URL answered before the fast path existed.
    drf = _call_drf(views.rating_create, rating_url(a["id"]), body, content_type, token)
    assert (fast.status_code, fast.json()) == (drf.status_code, json.loads(drf.content))
    assert fast.status_code in (400, 415)
    assert not Rating.objects.exists()


def _call_drf(view, path, body, content_type, token):
    if isinstance(body, dict):
        body = json.dumps(body)
    request = RequestFactory().post(
        path, body, content_type=content_type, HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    response = view(request, token=path.rstrip("/").split("/")[-2])
    response.render()
    return response


@pytest.mark.parametrize(
    "header", ["Token", "Token a b", "Token nope", "Bearer x", None]
)
def test_bad_or_missing_tokens_get_the_drf_answer(study, header):
    make_images(study, 1)
    client = Client(HTTP_AUTHORIZATION=header) if header else Client()
    r = client.post(next_url(study))
    assert r.status_code == 403 and "detail" in r.json()
    assert not Assignment.objects.exists()


def test_inactive_user_and_unknown_study_fall_back(study, annotator):
    make_images(study, 1)
    api = token_client(annotator)
    assert api.post("/api/v1/studies/999999/assignments/next/").status_code == 404
    annotator.user.is_active = False
    annotator.user.save()
    assert api.post(next_url(study)).status_code == 403
    assert not Assignment.objects.exists()


def test_staff_session_and_staff_token_still_work(study, staff_user):
    make_images(study, 1)
    staff = Client()
    staff.force_login(staff_user)
    r = staff.post(next_url(study))  # no annotator yet: the DRF view makes one
    assert r.status_code == 200
    token = Token.objects.create(user=staff_user)
    again = Client(HTTP_AUTHORIZATION=f"Token {token.key}").post(next_url(study))
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]


def test_schema_documents_the_fast_endpoints(client, staff_user):
    client.force_login(staff_user)
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    claim = schema["paths"]["/api/v1/studies/{study_id}/assignments/next/"]["post"]
    # The successes, and otherwise only the documented errors (core.schema).
    assert {"200", "204"} <= set(claim["responses"])
    assert all(code[0] == "4" for code in set(claim["responses"]) - {"200", "204"})
    assert "Assignment" in json.dumps(claim["responses"]["200"])
    rate = schema["paths"]["/api/v1/assignments/{token}/rating/"]["post"]
    assert {"200", "201", "409"} <= set(rate["responses"])
    assert "RatingInput" in json.dumps(rate["requestBody"])
    assert {"tokenAuth", "cookieAuth"} <= {k for s in claim["security"] for k in s}


def test_ids_past_bigint_and_odd_tokens_are_refused_not_crashed(study, annotator):
    make_images(study, 1)
    api = token_client(annotator)
    huge = 2**63
    assert api.post(f"/api/v1/studies/{huge}/assignments/next/").status_code == 404
    r = api.post(rating_url(huge), {"score": 3}, content_type="application/json")
    assert r.status_code == 404
    odd = Client(HTTP_AUTHORIZATION="Token " + "z" * 40)
    assert odd.post(next_url(study)).status_code == 403
    assert not Assignment.objects.exists()
