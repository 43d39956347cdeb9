"""Schema and server agree on query parameters and bodies (issue 24, finding 14):
garbage in limit, offset and retired is a 400 naming the parameter (it used to
be ignored); POST exports takes a JSON object of known options only; the quality
settings schema forbids the unknown keys the server refuses."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from annotation.models import Export
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


def lists(study) -> list[str]:
    return [
        "/api/v1/rewardmodel/versions/",
        f"/api/v1/studies/{study.pk}/attention-checks/",
        f"/api/v1/studies/{study.pk}/quality/annotators/",
    ]


@pytest.mark.parametrize(
    "query,message",
    [
        ("limit=abc", "limit: a whole number from 1 to 1000."),
        ("limit=-1", "limit: a whole number from 1 to 1000."),
        ("limit=0", "limit: a whole number from 1 to 1000."),
        ("limit=1001", "limit: a whole number from 1 to 1000."),
        ("limit=1e3", "limit: a whole number from 1 to 1000."),
        ("offset=x", "offset: a whole number from 0 to 2147483647."),
        ("offset=-5", "offset: a whole number from 0 to 2147483647."),
        ("offset=99999999999999999999", "offset: a whole number from 0 to"),
    ],
)
def test_garbage_paging_is_a_400_on_every_list(api, query, message):
    study = StudyFactory()
    for url in lists(study):
        r = api.get(f"{url}?{query}")
        assert r.status_code == 400, url
        assert r.json()["detail"].startswith(message), url


def test_good_paging_still_pages(api):
    study = StudyFactory()
    for url in lists(study):
        r = api.get(f"{url}?limit=1000&offset=0")
        assert r.status_code == 200 and r.json()["results"] == [], url


def test_retired_and_flag_take_only_their_values(api):
    study = StudyFactory()
    url = f"/api/v1/studies/{study.pk}/attention-checks/"
    for value in ("true", "false", "1", "0"):
        assert api.get(f"{url}?retired={value}").status_code == 200
    r = api.get(f"{url}?retired=maybe")
    assert r.status_code == 400 and r.json()["detail"] == "retired: true or false."
    r = api.get(f"/api/v1/studies/{study.pk}/quality/annotators/?flag=zzz")
    assert r.status_code == 400 and r.json()["detail"].startswith("flag: one of")


def test_post_exports_takes_a_json_object_of_known_options(api, settings, tmp_path):
    settings.PALATE_EXPORT_DIR = tmp_path
    study = StudyFactory()
    url = f"/api/v1/studies/{study.pk}/exports/"
    for body in ("[]", '"x"', "1", "null", '[{"format": "csv"}]'):
        r = api.post(url, body, content_type="application/json")
        assert r.status_code == 400, body
    r = api.post(url, {"fromat": "csv"}, format="json")
    assert r.status_code == 400 and r.json()["detail"] == "Unknown option(s): fromat."
    r = api.post(url, "garbage", content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415
    assert Export.objects.count() == 0


def _schema() -> dict:
    return Client().get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()


def test_the_schema_says_what_the_server_refuses():
    schema = _schema()
    versions = schema["paths"]["/api/v1/rewardmodel/versions/"]["get"]
    params = {p["name"]: p["schema"] for p in versions["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert params["offset"]["minimum"] == 0
    assert {"400", "403"} <= set(versions["responses"])
    config = schema["paths"]["/api/v1/studies/{study_id}/quality/config/"]["patch"]
    for media in config["requestBody"]["content"].values():
        assert media["schema"]["additionalProperties"] is False
        assert "attention_check_rate" in media["schema"]["properties"]
    exports = schema["paths"]["/api/v1/studies/{study_id}/exports/"]["post"]
    assert list(exports["requestBody"]["content"]) == ["application/json"]
    assert {"400", "403", "404", "415"} <= set(exports["responses"])
