"""The quality-control REST API (issue 13): attention checks (create, list, read,
remove), the study's QC settings, per-annotator QC results. Staff only; bad input
is a 400 {detail, code} that changes nothing; annotators' tokens get 403."""

import math
import threading

import pytest
from django.core.files.storage import default_storage
from django.db import connection, transaction
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation import services
from annotation.models import AttentionCheck, QualityConfig, StreamItem
from annotation.quality.services import quality as Q
from core.exceptions import InvalidInput
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images, png_bytes

from .test_quality import rate_one

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


@pytest.fixture
def staff(staff_user):
    return client_for(staff_user)


@pytest.fixture
def study(db):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=40)
    make_images(study, 12)
    return study


def checks_url(study, check=None):
    base = f"/api/v1/studies/{study.pk}/attention-checks/"
    return base if check is None else f"{base}{check}/"


def upload(api, study, **fields):
    data = {"file": _file(fields.pop("seed", 1)), "expected_min": 2, **fields}
    return api.post(checks_url(study), data, format="multipart")


def _file(seed):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(f"c{seed}.png", png_bytes(seed), "image/png")


def config_dict(study):
    services.quality_config_get(study=study)
    return {
        k: v
        for k, v in QualityConfig.objects.filter(study=study).values()[0].items()
        if k != "id"
    }


# --- attention checks -------------------------------------------------------------


def test_staff_create_list_read_attention_checks(staff, study):
    r = upload(staff, study, expected_max=3, instruction="Please press 2 or 3.")
    assert r.status_code == 201, r.json()
    body = r.json()
    check = AttentionCheck.objects.get(pk=body["id"])
    assert (check.expected_min, check.expected_max) == (2, 3)
    assert body["instruction"] == "Please press 2 or 3." and body["is_active"]
    assert body["image_url"].endswith(check.file.url)
    assert r["Location"] == checks_url(study, check.pk)
    upload(staff, study, seed=2)
    listed = staff.get(checks_url(study)).json()
    assert listed["count"] == 2
    assert [c["id"] for c in listed["results"]][1] == check.pk  # newest first
    assert staff.get(checks_url(study, check.pk)).json()["expected_max"] == 3
    other = StudyFactory()
    assert staff.get(checks_url(other, check.pk)).status_code == 404


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"expected_min": 9}, "scale"),
        ({"expected_min": 4, "expected_max": 3}, "above the highest"),
        ({"expected_min": "two"}, "expected_min"),
        ({"file": b"not an image"}, "file"),
        ({"instruction": "x" * 301}, "instruction"),
    ],
)
def test_bad_check_uploads_are_400_and_change_nothing(staff, study, fields, words):
    upload(staff, study, seed=7)
    before = list(AttentionCheck.objects.values_list("pk", flat=True))
    if isinstance(fields.get("file"), bytes):
        from django.core.files.uploadedfile import SimpleUploadedFile

        fields["file"] = SimpleUploadedFile("x.png", fields["file"], "image/png")
        r = staff.post(checks_url(study), {"expected_min": 2, **fields}, "multipart")
    else:
        r = upload(staff, study, seed=8, **fields)
    assert r.status_code == 400, r.content
    assert set(r.json()) >= {"detail", "code"} and words in r.json()["detail"]
    assert list(AttentionCheck.objects.values_list("pk", flat=True)) == before


def test_the_same_check_image_twice_is_refused(staff, study):
    assert upload(staff, study, seed=5).status_code == 201
    r = upload(staff, study, seed=5)
    assert r.status_code == 400 and "already" in r.json()["detail"]
    assert AttentionCheck.objects.filter(study=study).count() == 1


def test_removing_an_unused_check_deletes_it_and_its_file(
    staff, study, django_capture_on_commit_callbacks
):
    check = AttentionCheck.objects.get(pk=upload(staff, study).json()["id"])
    name = check.file.name
    assert default_storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        r = staff.delete(checks_url(study, check.pk))
    assert r.status_code == 200 and r.json() == {"id": check.pk, "result": "deleted"}
    assert not AttentionCheck.objects.filter(pk=check.pk).exists()
    assert not default_storage.exists(name)
    assert staff.delete(checks_url(study, check.pk)).status_code == 404


def test_removing_a_used_check_retires_it_and_keeps_the_record(staff, study):
    check = AttentionCheck.objects.get(pk=upload(staff, study).json()["id"])
    people = [join(AnnotatorFactory(), study) for _ in range(3)]
    items = [
        StreamItem.objects.create(
            study=study, annotator=p, kind="attention", check_item=check, due_after=0
        )
        for p in people
    ]
    services.stream_item_answer(item_id=items[0].pk, annotator=people[0], score=2)
    shown = services.stream_item_next(annotator=people[1], study=study, rated=1)
    assert shown.pk == items[1].pk  # on screen now
    r = staff.delete(checks_url(study, check.pk))
    assert r.json() == {"id": check.pk, "result": "retired"}
    check.refresh_from_db()
    assert not check.is_active and default_storage.exists(check.file.name)
    # Answered and on-screen items stay; the one never shown is withdrawn.
    left = set(StreamItem.objects.filter(check_item=check).values_list("pk", flat=True))
    assert left == {items[0].pk, items[1].pk}
    assert staff.get(checks_url(study)).json()["count"] == 0
    assert staff.get(checks_url(study) + "?retired=true").json()["count"] == 1
    # Never dealt again.
    services.quality_config_update(study=study, attention_check_rate=1.0)
    rate_one(study, people[2], 4)
    assert not StreamItem.objects.filter(annotator=people[2]).exists()


def _deal_in_python(study, annotator):
    picked = Q._pick_check(study, annotator.pk)
    StreamItem.objects.create(
        study=study,
        annotator=annotator,
        kind="attention",
        check_item=picked,
        due_after=0,
    )


def _deal_by_rating(study, annotator):
    """A real rating on PostgreSQL: ``palate_submit`` deals the check in SQL."""
    lease = services.assignment_claim(annotator=annotator, study=study)[0]
    services.rating_submit(assignment_id=lease.pk, annotator=annotator, score=4)
    assert StreamItem.objects.filter(annotator=annotator, kind="attention").exists()


@pytest.mark.parametrize("deal", [_deal_in_python, _deal_by_rating])
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_check_dealt_while_it_is_removed_is_retired_not_deleted(deal):
    """The rating path deals the check (inside its transaction) while staff remove
    it: the removal waits for the rating and keeps the check, retired. Without the
    FOR KEY SHARE lock (Python ``_pick_check``, SQL ``palate_submit``) the delete
    went through and the rating's commit failed on the foreign key."""
    study = StudyFactory(raters_per_image=3, quota_per_annotator=40)
    make_images(study, 2)
    annotator = join(AnnotatorFactory(), study)
    check = services.attention_check_create(
        study=study, data=png_bytes(3), expected_min=2
    )
    services.quality_config_update(study=study, attention_check_rate=1.0)
    dealt, outcome = threading.Event(), {}

    def rating_side():
        try:
            with transaction.atomic():
                deal(study, annotator)
                dealt.set()
                threading.Event().wait(0.5)  # the removal runs meanwhile
            outcome["rating"] = "committed"
        except Exception as e:  # reported below, with its type
            outcome["rating"] = repr(e)
        finally:
            dealt.set()
            connection.close()

    t = threading.Thread(target=rating_side)
    t.start()
    dealt.wait(10)
    removed = services.attention_check_remove(study=study, check_id=check.pk)
    t.join(10)
    assert outcome["rating"] == "committed"
    assert removed is False
    check.refresh_from_db()
    assert not check.is_active
    assert StreamItem.objects.filter(check_item=check).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_check_uploaded_twice_at_once_is_a_clear_refusal():
    """The second upload passes the duplicate look before the first commits; the
    unique constraint then stops it, and that must be the usual 400 message (it
    was an IntegrityError, a 500), with its stored file removed."""
    study = StudyFactory(raters_per_image=3, quota_per_annotator=40)
    inserted, outcome = threading.Event(), {}

    def first_upload():
        try:
            with transaction.atomic():
                services.attention_check_create(
                    study=study, data=png_bytes(5), expected_min=2
                )
                inserted.set()
                threading.Event().wait(0.5)  # the second upload runs meanwhile
            outcome["first"] = "committed"
        finally:
            inserted.set()
            connection.close()

    t = threading.Thread(target=first_upload)
    t.start()
    inserted.wait(10)
    folder = f"checks/{study.pk}"
    files_before = set(default_storage.listdir(folder)[1])
    with pytest.raises(InvalidInput, match="already in the study"):
        services.attention_check_create(study=study, data=png_bytes(5), expected_min=2)
    t.join(10)
    assert outcome["first"] == "committed"
    assert AttentionCheck.objects.filter(study=study).count() == 1
    assert set(default_storage.listdir(folder)[1]) == files_before


# --- settings ---------------------------------------------------------------------


def test_read_and_patch_the_qc_settings(staff, study):
    url = f"/api/v1/studies/{study.pk}/quality/config/"
    body = staff.get(url).json()
    assert body["attention_check_rate"] == 0.0 and body["auto_pause"] is False
    assert "study" not in body and "id" not in body
    r = staff.patch(
        url,
        {"attention_check_rate": 0.1, "auto_pause": True, "min_checks": 5},
        format="json",
    )
    assert r.status_code == 200, r.json()
    config = QualityConfig.objects.get(study=study)
    assert (config.attention_check_rate, config.auto_pause, config.min_checks) == (
        0.1,
        True,
        5,
    )
    assert config.repeat_rate == 0.0  # untouched
    assert r.json() == staff.get(url).json()


@pytest.mark.parametrize(
    "patch, words",
    [
        ({"attention_check_rate": 1.5}, "attention_check_rate"),
        ({"repeat_rate": -0.1}, "repeat_rate"),
        ({"min_checks": 0}, "min_checks"),
        ({"min_evidence": 0}, "min_evidence"),
        ({"repeat_gap": 0}, "repeat_gap"),
        ({"straightline_run": 1}, "straightline_run"),
        ({"loo_min_corr": 2}, "loo_min_corr"),
        ({"too_fast_ms": "fast"}, "too_fast_ms"),
        ({"hard_fast_share": "NaN"}, "hard_fast_share"),
        ({"check_rate": 0.1}, "Unknown setting(s): check_rate"),
        ({"repeat_rate": 0.2, "bogus": 1}, "bogus"),
        ({"study": 999}, "study"),
    ],
)
def test_bad_settings_are_400_and_change_nothing(staff, study, patch, words):
    url = f"/api/v1/studies/{study.pk}/quality/config/"
    staff.get(url)
    before = config_dict(study)
    r = staff.patch(url, patch, format="json")
    assert r.status_code == 400, r.content
    assert r.json()["code"] == "invalid" and words in r.json()["detail"], r.json()
    assert config_dict(study) == before


def test_thresholds_that_would_break_the_rating_path_are_refused_everywhere(study):
    from django.db import IntegrityError

    from core.exceptions import InvalidInput

    with pytest.raises(InvalidInput, match="min_checks"):
        services.quality_config_update(study=study, min_checks=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        QualityConfig.objects.filter(study=study).update(min_checks=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        QualityConfig.objects.filter(study=study).update(hard_check_failures=0)


# --- results ----------------------------------------------------------------------


def test_per_annotator_results(staff, study):
    services.quality_config_update(
        study=study, repeat_rate=1.0, repeat_gap=1, min_checks=2
    )
    check = services.attention_check_create(
        study=study, data=png_bytes(9), expected_min=2
    )
    careless, careful = (join(AnnotatorFactory(), study) for _ in range(2))
    for who, answer in ((careless, 6), (careful, 2)):
        for _ in range(3):
            item = StreamItem.objects.create(
                study=study,
                annotator=who,
                kind="attention",
                check_item=check,
                due_after=0,
            )
            services.stream_item_answer(item_id=item.pk, annotator=who, score=answer)
    firsts, repeats = [1, 3, 5, 7, 2, 6], [2, 3, 4, 7, 1, 6]
    for score in firsts:
        rate_one(study, careful, score)
    for item, again in zip(
        StreamItem.objects.filter(annotator=careful, kind="repeat").order_by("pk"),
        repeats,
        strict=True,
    ):
        services.stream_item_answer(item_id=item.pk, annotator=careful, score=again)
    url = f"/api/v1/studies/{study.pk}/quality/annotators/"
    rows = {r["annotator_public_id"]: r for r in staff.get(url).json()["results"]}
    bad, good = rows[careless.public_id], rows[careful.public_id]
    assert (bad["checks_answered"], bad["checks_passed"], bad["checks_failed"]) == (
        3,
        0,
        3,
    )
    assert bad["flags"] == ["failed_checks"] and good["flags"] == []
    assert (good["checks_passed"], good["ratings"], good["retest_pairs"]) == (3, 6, 6)
    assert good["retest_reliability"] == pytest.approx(_corr(firsts, repeats))
    assert good["retest_mean_abs_diff"] == pytest.approx(3 / 6)
    assert bad["retest_reliability"] is None and bad["annotator_status"] == "active"
    flagged = staff.get(url, {"flag": "failed_checks"}).json()
    assert [r["annotator"] for r in flagged["results"]] == [careless.pk]
    r = staff.get(url, {"flag": "sleepy"})
    assert r.status_code == 400 and "flag" in r.json()["detail"]


def _corr(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


# --- who may -----------------------------------------------------------------------


def test_annotators_tokens_get_403_and_anonymous_is_refused(study):
    check = services.attention_check_create(
        study=study, data=png_bytes(4), expected_min=2
    )
    annotator = client_for(join(AnnotatorFactory(), study).user)
    calls = [
        ("get", checks_url(study)),
        ("post", checks_url(study)),
        ("get", checks_url(study, check.pk)),
        ("delete", checks_url(study, check.pk)),
        ("get", f"/api/v1/studies/{study.pk}/quality/config/"),
        ("patch", f"/api/v1/studies/{study.pk}/quality/config/"),
        ("get", f"/api/v1/studies/{study.pk}/quality/annotators/"),
    ]
    before = config_dict(study)
    for method, url in calls:
        r = getattr(annotator, method)(url, {"min_checks": 9}, format="json")
        assert r.status_code == 403, (method, url, r.status_code)
        assert r.json()["code"] == "permission_denied"
        # Not signed in: refused as unauthenticated (403, as DRF answers when the
        # first authentication scheme, the session, has no challenge to send).
        r = getattr(APIClient(), method)(url)
        assert r.status_code in (401, 403), (method, url, r.status_code)
        assert r.json()["code"] == "not_authenticated"
    assert AttentionCheck.objects.get(pk=check.pk).is_active
    assert config_dict(study) == before


def test_every_operation_is_in_the_openapi_schema(client):
    paths = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()[
        "paths"
    ]
    base = "/api/v1/studies/{study_id}/"
    assert set(paths[base + "attention-checks/"]) >= {"get", "post"}
    assert set(paths[base + "attention-checks/{check_id}/"]) >= {"get", "delete"}
    assert set(paths[base + "quality/config/"]) >= {"get", "patch"}
    assert "get" in paths[base + "quality/annotators/"]
    upload = paths[base + "attention-checks/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
