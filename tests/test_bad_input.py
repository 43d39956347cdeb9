"""Bad input answers 400 in the error envelope and changes nothing (issue 10,
findings 3 and 4): NUL characters, numbers past their column or past sense, JSON
of the wrong shape. Runs on PostgreSQL, which is what refuses NUL in JSON."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Image, Study
from generation.models import GenerationJob, Prompt
from rewardmodel.models import TrainingRun
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images, png_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

BIG = 2**63


@pytest.fixture
def staff_api(staff_user):
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=staff_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def envelope(r, status=400) -> dict:
    assert r.status_code == status, (r.status_code, r.content[:500])
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["code"], str) and body["code"]
    return body


STUDY = {"name": "S", "slug": "s-new"}


@pytest.mark.parametrize(
    "field,value",
    [
        ("scale_labels", ["a\x00b"] + ["x"] * 6),
        ("scale_labels", "not a list"),
        ("scale_labels", [1, 2, 3, 4, 5, 6, 7]),
        ("scale_labels", [{"a": 1}] * 7),
        ("demographics_fields", ["age_range\x00"]),
        ("demographics_fields", ["shoe_size"]),
        ("demographics_fields", {"age_range": True}),
        ("demographics_fields", ["age_range", "age_range"]),
        ("lease_seconds", 10**9),
        ("lease_seconds", 4),
        ("raters_per_image", 10**6),
        ("quota_per_annotator", BIG),
        ("scale_min", -(10**6)),
        ("scale_max", 10**6),
        ("name", "x\x00y"),
    ],
)
def test_study_create_refuses_with_field_errors(staff_api, field, value):
    r = staff_api.post("/api/v1/studies/", {**STUDY, field: value}, format="json")
    body = envelope(r)
    assert body["code"] == "invalid"
    assert field in body["errors"], body
    assert field in body["detail"]
    assert not Study.objects.filter(slug="s-new").exists()


def test_every_serializer_400_keeps_the_envelope(staff_api):
    r = staff_api.post("/rewardmodel/x/", {}, format="json")  # not the API: HTML 404
    assert r.status_code == 404
    r = staff_api.post(
        "/api/v1/rewardmodel/trainings/", {"promote": "maybe"}, format="json"
    )
    body = envelope(r)
    assert list(body["errors"]) == ["promote"]
    r = staff_api.post("/api/v1/generation/jobs/", {"backend": "procedural"})
    body = envelope(r)
    assert "n_seeds" in body["errors"]
    r = staff_api.post("/api/v1/studies/", "{bad json", content_type="application/json")
    envelope(r)


def test_upload_with_nul_in_provenance_is_refused_and_leaves_no_file(
    staff_api, settings
):
    study = StudyFactory()
    url = f"/api/v1/studies/{study.pk}/images/"
    for provenance in ('{"a": "x\\u0000y"}', "[1, 2]", '"text"', '{"n": NaN}'):
        r = staff_api.post(
            url,
            {
                "file": SimpleUploadedFile("a.png", png_bytes(1)),
                "provenance": provenance,
            },
            format="multipart",
        )
        body = envelope(r)
        assert "provenance" in body["errors"], provenance
    assert not Image.objects.exists()
    media = settings.MEDIA_ROOT
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_image_create_service_cleans_up_when_the_row_fails(settings):
    from annotation import services
    from core.exceptions import InvalidInput

    study = StudyFactory()
    with pytest.raises(InvalidInput):
        services.image_create(
            study=study, data=png_bytes(2), provenance={"k": "nul\x00"}
        )
    with pytest.raises(InvalidInput):
        services.image_create(study=study, data=png_bytes(3), domain="d" * 61)
    media = settings.MEDIA_ROOT
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"seed_start": BIG}, "seed_start"),
        ({"seed_start": -1}, "seed_start"),
        ({"params": {"x": "a\x00"}}, "params"),
        ({"params": [1]}, "params"),
        ({"tags": ["a\x00"]}, "tags"),
        ({"study": BIG}, "study"),
        ({"n_seeds": BIG}, "n_seeds"),
    ],
)
def test_generation_job_bad_numbers_and_json(staff_api, extra, field):
    study = StudyFactory()
    payload = {
        "study": study.pk,
        "text": "a cat",
        "backend": "procedural",
        "n_seeds": 2,
        **extra,
    }
    body = envelope(staff_api.post("/api/v1/generation/jobs/", payload, format="json"))
    assert field in body["errors"], body
    assert not GenerationJob.objects.exists() and not Prompt.objects.exists()


def test_generation_job_seed_range_is_checked_by_the_service_too():
    from core.exceptions import InvalidInput
    from generation import services
    from generation.models import SEED_MAX

    study = StudyFactory()
    prompt = services.prompt_create(study=study, text="a dog")
    with pytest.raises(InvalidInput):
        services.jobs_create(
            prompts=[prompt], backend="procedural", n_seeds=2, seed_start=SEED_MAX
        )


@pytest.mark.parametrize(
    "config",
    [
        {"steps": "many"},
        {"steps": 10**12},
        {"nonsense": 1},
        {"backbone": "x\x00"},
        {"ks": [BIG]},
        {"lr": -1},
    ],
)
def test_training_config_is_validated(staff_api, config):
    r = staff_api.post(
        "/api/v1/rewardmodel/trainings/", {"config": config}, format="json"
    )
    body = envelope(r)
    assert "config" in body["errors"]
    assert not TrainingRun.objects.exists()


def test_non_json_numbers_are_a_parse_error_in_the_envelope(staff_api):
    r = staff_api.post(
        "/api/v1/rewardmodel/trainings/",
        '{"config": {"lr": Infinity}}',
        content_type="application/json",
    )
    assert envelope(r)["code"] == "parse_error"
    assert not TrainingRun.objects.exists()


def test_predict_and_ids_past_bigint(staff_api):
    body = envelope(
        staff_api.post(
            "/api/v1/rewardmodel/predict/",
            {"annotator": BIG, "images": [1]},
            format="json",
        )
    )
    assert "annotator" in body["errors"]


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/studies/{BIG}/progress/",
        f"/api/v1/generation/jobs/{BIG}/",
        f"/api/v1/rewardmodel/trainings/{BIG}/",
        f"/api/v1/rewardmodel/versions/{BIG}/annotators/",
    ],
)
def test_path_ids_past_bigint_are_404(staff_api, path):
    envelope(staff_api.get(path), status=404)


def test_pagination_and_query_parameters_are_bounded(staff_api):
    # Refused with the parameter's name (issue 24: they used to be ignored).
    for query in (f"limit={BIG}", f"offset={BIG}", "limit=-5", "offset=abc"):
        r = staff_api.get(f"/api/v1/rewardmodel/versions/?{query}")
        body = envelope(r, status=400)
        assert body["detail"].startswith(query.split("=")[0] + ":"), query


def test_rating_score_past_bigint_and_nul_token(study):
    make_images(study, 1)
    annotator = join(AnnotatorFactory(), study)
    token, _ = Token.objects.get_or_create(user=annotator.user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    a = api.post(f"/api/v1/studies/{study.pk}/assignments/next/").json()
    url = f"/api/v1/assignments/{a['id']}/rating/"
    body = envelope(api.post(url, {"score": BIG}, format="json"))
    assert body["code"] == "invalid" and "score" in body["detail"]
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token abc\x00def")
    r = bad.post(f"/api/v1/studies/{study.pk}/assignments/next/")
    assert r.status_code in (401, 403)
    assert r.json()["code"]
