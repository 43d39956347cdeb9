"""Where researchers and staff meet adaptive dealing (issue 27): the export's
per-rating fields and dataset card, the staff API, the dashboard's card and
form. Rankings are written directly; the engine and the model have their own
tests (test_dealing.py here and in tests/rewardmodel)."""

import pyarrow.parquet as pq
import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from annotation.datasets.services.export import ExportOptions, dataset_export
from annotation.engine.services.dealing import (
    dealing_policy_set,
    dealing_ranking_replace,
)
from annotation.models import Assignment, DealingState, Study
from tests.annotation.export_fixtures import rated_study
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = pytest.mark.django_db


def _rows(root, config="ratings"):
    rows = []
    for path in sorted((root / config / "data").glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def _adaptive_study():
    """An export study whose first annotator had a ranking: their images were
    dealt adaptively, everyone else's fullest first."""
    from annotation import services

    study = StudyFactory(raters_per_image=2, quota_per_annotator=4)
    images = make_images(study, 4)
    first, second = (join(AnnotatorFactory(), study) for _ in range(2))
    dealing_policy_set(study=study, policy="adaptive", warmup=0, band=1000)
    dealing_ranking_replace(
        study_id=study.pk,
        annotator_id=first.pk,
        ranked=[(im.pk, 0.1 * (4 - n)) for n, im in enumerate(images[::-1])],
        uncertainty=0.8,
        version_id=None,
        how="adapted from 3 ratings",
    )
    for who in (first, second):
        while lease := services.assignment_claim(annotator=who, study=study):
            services.rating_submit(assignment_id=lease[0].pk, annotator=who, score=3)
    return study, first, images


def test_export_carries_how_each_rating_was_dealt_and_the_card_says_so(tmp_path):
    study, first, images = _adaptive_study()
    dataset_export(study=study, out=tmp_path / "ds", options=ExportOptions())
    rows = _rows(tmp_path / "ds")
    assert {r["dealing_policy"] for r in rows} == {"adaptive", "fullest-first"}
    mine = sorted(
        (r for r in rows if r["annotator_id"] == first.public_id),
        key=lambda r: r["dealing_rank"],
    )
    assert [r["image_id"] for r in mine] == [im.pk for im in images[::-1]]
    assert [r["dealing_rank"] for r in mine] == [1, 2, 3, 4]
    assert mine[0]["dealing_information"] == pytest.approx(0.4)
    others = [r for r in rows if r["annotator_id"] != first.public_id]
    assert all(r["dealing_rank"] is None for r in others)
    card = (tmp_path / "ds/README.md").read_text()
    assert "Dealing policy: `adaptive` (warm-up 0 ratings, band 1000" in card
    assert "4 were dealt adaptively and 4 fullest first" in card
    assert "a person's images are not a random sample" in card
    assert "dealing_information" in card  # the column's description


def test_fullest_first_export_says_so_without_the_adaptive_caveat(tmp_path):
    study = rated_study()
    dataset_export(study=study, out=tmp_path / "ds", options=ExportOptions())
    rows = _rows(tmp_path / "ds")
    assert {r["dealing_policy"] for r in rows} == {"fullest-first"}
    card = (tmp_path / "ds/README.md").read_text()
    assert "Dealing policy: `fullest-first`" in card
    assert "a person's images are not a random sample" not in card


def _staff_api(client, admin_user):
    token = Token.objects.create(user=admin_user)
    return {"HTTP_AUTHORIZATION": f"Token {token.key}"}


def test_api_reads_and_sets_the_policy_and_refuses_bad_values(client, admin_user):
    study, first, _ = _adaptive_study()
    auth = _staff_api(client, admin_user)
    url = f"/api/v1/studies/{study.pk}/dealing/"
    got = client.get(url, **auth).json()
    assert got["policy"] == "adaptive" and got["dealt"] == {
        "fullest_first": 4,
        "adaptive": 4,
    }
    assert got["annotators"][0]["public_id"] == first.public_id
    assert got["annotators"][0]["uncertainty"] == pytest.approx(0.8)
    for bad in (
        {"policy": "random"},
        {"warmup": -1},
        {"band": 5000},
        {"warmup": "ten"},
        {"speed": 3},
        {},
    ):
        r = client.patch(url, bad, content_type="application/json", **auth)
        assert r.status_code == 400, (bad, r.content)
        assert r.json()["detail"]
    study.refresh_from_db()
    assert (study.dealing_policy, study.dealing_warmup, study.dealing_band) == (
        "adaptive",
        0,
        1000,
    )
    r = client.patch(
        url,
        {"policy": "fullest-first", "band": 3},
        content_type="application/json",
        **auth,
    )
    assert r.status_code == 200 and r.json()["band"] == 3
    study.refresh_from_db()
    assert (study.dealing_policy, study.dealing_band) == ("fullest-first", 3)
    annotator = join(AnnotatorFactory(), study)
    token = Token.objects.create(user=annotator.user)
    r = client.get(url, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert r.status_code == 403


def test_study_api_creates_with_a_policy_and_validates_it(client, admin_user):
    auth = _staff_api(client, admin_user)
    base = {"name": "S", "slug": "s-dealing"}
    r = client.post(
        "/api/v1/studies/",
        {**base, "dealing_policy": "sideways"},
        content_type="application/json",
        **auth,
    )
    assert r.status_code == 400 and not Study.objects.filter(slug="s-dealing").exists()
    r = client.post(
        "/api/v1/studies/",
        {**base, "dealing_policy": "adaptive", "dealing_warmup": 4},
        content_type="application/json",
        **auth,
    )
    assert r.status_code == 201, r.content
    assert r.json()["dealing_policy"] == "adaptive" and r.json()["dealing_warmup"] == 4


def test_dashboard_shows_the_policy_and_uncertainty_and_sets_it(client, admin_user):
    study, first, _ = _adaptive_study()
    DealingState.objects.filter(annotator=first).update(uncertainty=0.731)
    client.force_login(admin_user)
    page = client.get(reverse("dashboard:study", args=[study.pk])).content.decode()
    assert "Dealing: adaptive" in page
    assert "How uncertain each annotator" in page
    assert first.public_id in page and "0.731" in page
    url = reverse("dashboard:dealing_settings", args=[study.pk])
    r = client.post(url, {"policy": "adaptive", "warmup": 2000, "band": 1})
    assert r.status_code == 302
    study.refresh_from_db()
    assert study.dealing_warmup == 0  # refused, unchanged
    r = client.post(url, {"policy": "fullest-first", "warmup": 7, "band": 1})
    assert r.status_code == 302
    study.refresh_from_db()
    assert (study.dealing_policy, study.dealing_warmup, study.dealing_band) == (
        "fullest-first",
        7,
        1,
    )
    page = client.get(reverse("dashboard:study", args=[study.pk])).content.decode()
    assert "Dealing: fullest-first" in page
    assert Assignment.objects.filter(study=study, dealt_by="adaptive").count() == 4
