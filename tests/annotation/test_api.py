"""REST API v1: status codes, permissions and query counts of the hot endpoints."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation import services
from annotation.models import Image, Rating
from tests.factories import (
    AnnotatorFactory,
    StudyFactory,
    join,
    make_images,
    png_bytes,
)
from tests.items import row_of, token_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_for():
    def make(user):
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@pytest.fixture
def annotator(study):
    """An annotator who joined ``study`` through its link."""
    return join(AnnotatorFactory(), study)


@pytest.fixture
def staff_api(api_for, staff_user):
    return api_for(staff_user)


def next_url(study):
    return f"/api/v1/studies/{study.pk}/assignments/next/"


def test_anonymous_requests_are_refused(study):
    assert APIClient().post(next_url(study)).status_code in (401, 403)
    assert APIClient().get("/api/v1/studies/").status_code in (401, 403)


def test_claim_rate_repeat_conflict_cycle(api_for, study, annotator):
    make_images(study, 2)
    api = api_for(annotator.user)
    r = api.post(next_url(study))
    assert r.status_code == 200
    body = r.json()
    assert "/media/i/" in body["image_url"] and body["status"] == "leased"
    assert "image" not in body  # an image id would show a repeat for what it is
    assert api.post(next_url(study)).json()["id"] == body["id"]  # same lease on retry
    url = f"/api/v1/assignments/{body['id']}/rating/"
    assert api.post(url, {"score": 5}, format="json").status_code == 201
    assert api.post(url, {"score": 5}, format="json").status_code == 200
    r = api.post(url, {"score": 6}, format="json")
    assert r.status_code == 409 and "already rated" in r.json()["detail"]
    assert Rating.objects.get().score == 5


def test_bad_scores_get_400_and_change_nothing(api_for, study, annotator):
    make_images(study, 1)
    api = api_for(annotator.user)
    a = api.post(next_url(study)).json()
    url = f"/api/v1/assignments/{a['id']}/rating/"
    for payload in ({"score": 99}, {"score": "nice"}, {}):
        r = api.post(url, payload, format="json")
        assert r.status_code == 400, payload
        assert r.json()
    assert not Rating.objects.exists()


def test_204_when_nothing_is_left(api_for, study, annotator):
    make_images(study, 1)
    api = api_for(annotator.user)
    a = api.post(next_url(study)).json()
    assert api.post(f"/api/v1/assignments/{a['id']}/skip/").status_code == 200
    assert api.post(next_url(study)).status_code == 204


def test_cannot_rate_an_image_through_someone_elses_assignment(api_for, study):
    make_images(study, 1)
    owner, intruder = join(AnnotatorFactory(), study), join(AnnotatorFactory(), study)
    a = api_for(owner.user).post(next_url(study)).json()
    r = api_for(intruder.user).post(
        f"/api/v1/assignments/{a['id']}/rating/", {"score": 3}, format="json"
    )
    assert r.status_code == 404
    assert not Rating.objects.exists()


def test_paused_annotator_gets_403_with_message(api_for, study, annotator):
    make_images(study, 1)
    services.annotator_set_status(annotator=annotator, status="paused")
    r = api_for(annotator.user).post(next_url(study))
    assert r.status_code == 403
    assert "paused" in r.json()["detail"]


def test_closed_study_gets_403(api_for, annotator, study):
    make_images(study, 1)
    study.status = "closed"
    study.save()
    r = api_for(annotator.user).post(next_url(study))
    assert r.status_code == 403 and r.json()["code"] == "study_not_open"


def test_annotators_see_only_their_studies_staff_see_all(api_for, staff_api, study):
    other = StudyFactory()
    annotator = AnnotatorFactory()
    make_images(study, 1)
    api = api_for(annotator.user)
    assert api.get("/api/v1/studies/").json() == []
    join(annotator, study)
    listed = api.get("/api/v1/studies/").json()
    assert [s["id"] for s in listed] == [study.pk]
    assert "completion_code" not in listed[0]
    assert {s["id"] for s in staff_api.get("/api/v1/studies/").json()} >= {
        study.pk,
        other.pk,
    }


def test_only_staff_create_studies_and_bad_input_is_explained(
    api_for, staff_api, annotator
):
    payload = {"name": "Cats", "slug": "cats", "raters_per_image": 15}
    assert (
        api_for(annotator.user)
        .post("/api/v1/studies/", payload, format="json")
        .status_code
        == 403
    )
    r = staff_api.post("/api/v1/studies/", payload, format="json")
    assert r.status_code == 201 and r.json()["raters_per_image"] == 15
    r = staff_api.post(
        "/api/v1/studies/",
        {"name": "Bad", "slug": "bad", "scale_min": 5, "scale_max": 2},
        format="json",
    )
    assert r.status_code == 400 and "scale_min" in r.json()["detail"]


def test_upload_accepts_images_and_refuses_the_rest(
    staff_api, api_for, study, annotator
):
    url = f"/api/v1/studies/{study.pk}/images/"
    data = png_bytes(1)
    r = staff_api.post(
        url,
        {"file": SimpleUploadedFile("a.png", data), "prompt": "a cat", "domain": "art"},
        format="multipart",
    )
    assert r.status_code == 201, r.json()
    assert r.json()["open_slots"] == study.raters_per_image
    r = staff_api.post(
        url, {"file": SimpleUploadedFile("b.png", data)}, format="multipart"
    )
    assert r.status_code == 400 and "already in study" in r.json()["detail"]
    r = staff_api.post(
        url, {"file": SimpleUploadedFile("c.png", b"not an image")}, format="multipart"
    )
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]
    r = api_for(annotator.user).post(
        url, {"file": SimpleUploadedFile("d.png", png_bytes(2))}, format="multipart"
    )
    assert r.status_code == 403
    assert Image.objects.count() == 1


def test_progress_counts_images_by_valid_ratings(staff_api, study, api_for):
    make_images(study, 2)
    for _ in range(2):
        annotator = join(AnnotatorFactory(), study)
        a = services.assignment_claim(annotator=annotator, study=study)[0]
        services.rating_submit(assignment_id=a.pk, annotator=annotator, score=3)
    body = staff_api.get(f"/api/v1/studies/{study.pk}/progress/").json()
    assert body["ratings"] == 2 and body["images"] == 2
    assert body["images_by_rating_count"] == {"0": 1, "1": 0, "2": 1, "3": 0}
    assert body["ratings_last_hour"] == 2
    assert (
        api_for(AnnotatorFactory().user)
        .get(f"/api/v1/studies/{study.pk}/progress/")
        .status_code
        == 403
    )


def test_schema_and_docs_are_served(staff_api, client, staff_user):
    r = staff_api.get("/api/v1/schema/")
    assert r.status_code == 200
    assert b"/api/v1/assignments/{token}/rating/" in r.content
    client.force_login(staff_user)
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200 and b"cdn" not in docs.content.lower()


@pytest.mark.parametrize("sql_engine", [True, False], ids=["sql", "python"])
def test_claim_and_submit_query_counts(
    api_for, study, annotator, django_assert_num_queries, settings, sql_engine
):
    """Exact counts, and each counted request must also have done its job (an
    endpoint that answers 500 early would do fewer queries, not pass). On
    PostgreSQL the SQL engine does each request in one statement (token included);
    the counts below the comments are the Python path's (SQLite, or switched off)."""
    settings.PALATE_SQL_ENGINE = sql_engine
    one_statement = sql_engine and connection.vendor == "postgresql"
    make_images(study, 3)
    # The pick starts at a random shuffle key and wraps around (a second query)
    # when nothing lies above it; keys at the top make it one query every time.
    Image.objects.filter(study=study).update(shuffle=2**31 - 1)
    api = api_for(annotator.user)
    first = api.post(next_url(study))  # warm: participation exists
    assert first.status_code == 200
    rated = api.post(
        f"/api/v1/assignments/{first.json()['id']}/rating/", {"score": 3}, format="json"
    )
    assert rated.status_code == 201
    # claim: token+annotator, study, annotator FOR SHARE, participation lock,
    # live leases, quota count, pick (5: the fullest level holds only the image
    # this annotator rated, so its window, up and wrapping, is read, then the
    # next level's first image), slot update, insert, savepoint pair, the
    # ratings count and the stream items due (items.item_next)
    with django_assert_num_queries(1 if one_statement else 17):
        claimed = api.post(next_url(study))
        assert claimed.status_code == 200
    lease = row_of(claimed.json()["id"])
    assert lease.annotator == annotator and lease.status == "leased"
    assert lease.image_id != row_of(first.json()["id"]).image_id
    assert Image.objects.get(pk=lease.image_id).lease_count == 1
    # rating: token+annotator, annotator FOR SHARE, assignment lock, image
    # update, insert, status, savepoint pair; quality control adds two (lock
    # its row, with the study's thresholds and the image's other ratings in the
    # same query; save it). On PostgreSQL all of it is palate_submit.
    with django_assert_num_queries(1 if one_statement else 10):
        r = api.post(
            f"/api/v1/assignments/{token_of(lease)}/rating/",
            {"score": 4},
            format="json",
        )
        assert r.status_code == 201
    image = Image.objects.get(pk=lease.image_id)
    assert (image.rating_count, image.lease_count) == (1, 0)
    assert Rating.objects.get(assignment=lease).score == 4
    lease.refresh_from_db()
    assert lease.status == "submitted"


def test_media_is_served_from_the_current_media_root_and_cached(client, study):
    (image,) = make_images(study, 1)
    r = client.get(image.file.url)
    assert r.status_code == 200
    assert b"".join(r.streaming_content) == image.file.read()
    assert "immutable" in r["Cache-Control"]
    assert client.get("/media/../config/settings/base.py").status_code in (400, 404)
