"""Hardening (issue 10, finding 7): Content-Security-Policy and Permissions-Policy
on every page, the API docs working under them, admin login throttling, unguessable
completion codes, and instructions that cannot embed remote images."""

import re

import pytest
from django.urls import reverse

from annotation import services
from core.middleware import CONTENT_SECURITY_POLICY
from tests.factories import AnnotatorFactory, StudyFactory, join

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)


@pytest.mark.parametrize(
    "url", ["/", "/admin/login/", "/api/v1/docs/", "/api/v1/redoc/", "/api/v1/schema/"]
)
def test_every_page_has_csp_and_permissions_policy(client, url):
    r = client.get(url)
    assert r.status_code == 200
    csp = r["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert "camera=()" in r["Permissions-Policy"]
    assert "geolocation=()" in r["Permissions-Policy"]


def test_csp_names_no_other_host():
    assert "http" not in CONTENT_SECURITY_POLICY
    assert "*" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("url", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_api_docs_load_everything_from_this_site_without_inline_scripts(client, url):
    body = client.get(url).content.decode()
    assert not INLINE_SCRIPT.search(body), INLINE_SCRIPT.search(body)
    for ref in re.findall(r'(?:src|href)="([^"]+)"', body):
        assert ref.startswith("/"), ref  # nothing remote (no CDN, no web fonts)
        if ref.startswith("/api/v1/docs/"):
            r = client.get(ref)  # Swagger UI's start script, served as a file
            assert r.status_code == 200 and b"SwaggerUIBundle" in r.content


def test_annotator_pages_have_no_inline_scripts(client):
    study = StudyFactory()
    body = client.get(
        reverse("annotation:join", args=[study.slug]) + f"?t={study.invite_token}"
    ).content.decode()
    assert not INLINE_SCRIPT.search(body)


def test_admin_login_is_throttled_after_five_wrong_passwords(client, staff_user):
    url = "/admin/login/?next=/admin/"
    for _ in range(4):
        r = client.post(url, {"username": "staff", "password": "wrong"})
        assert r.status_code == 200  # the form again, with its error
    r = client.post(url, {"username": "staff", "password": "wrong"})
    assert r.status_code == 429  # the fifth: locked out
    r = client.post(url, {"username": "staff", "password": "pw-staff-123"})
    assert r.status_code == 429  # locked out, even with the right password
    assert "_auth_user_id" not in client.session


def test_a_correct_login_still_works_and_resets_the_count(client, staff_user):
    url = "/admin/login/?next=/admin/"
    for _ in range(3):
        client.post(url, {"username": "staff", "password": "wrong"})
    r = client.post(url, {"username": "staff", "password": "pw-staff-123"})
    assert r.status_code == 302 and client.session["_auth_user_id"]
    assert client.login(username="staff", password="pw-staff-123")


def test_completion_codes_are_per_participation_and_unguessable():
    study = StudyFactory()
    codes = []
    for _ in range(5):
        annotator = join(AnnotatorFactory(), study)
        p = services.participation_get_or_create(annotator=annotator, study=study)
        codes.append(services.participation_complete(participation=p).completion_code)
    assert len(set(codes)) == 5
    for code in codes:
        assert re.fullmatch(r"PAL-[A-HJ-KM-NP-Z2-9]{12}", code), code
        assert str(study.pk) not in code.split("-", 1)[1][:2]  # not PAL-<study>-<n>


def test_a_study_fixed_completion_code_is_kept():
    study = StudyFactory(completion_code="C1ABCD")
    annotator = join(AnnotatorFactory(), study)
    p = services.participation_get_or_create(annotator=annotator, study=study)
    assert services.participation_complete(participation=p).completion_code == "C1ABCD"


def test_instructions_embed_only_self_hosted_images(client):
    study = StudyFactory(
        instructions=(
            "![pixel](https://tracker.example/p.gif) ![here](/media/ok.png) "
            '<img src="//tracker.example/x.gif"> [a link](https://example.org)'
        )
    )
    client.post(
        reverse("annotation:join", args=[study.slug]),
        {"t": study.invite_token, "agree": "on"},
    )
    body = client.get(reverse("annotation:instructions", args=[study.slug]))
    html = body.content.decode()
    assert "tracker.example" not in html
    assert 'src="/media/ok.png"' in html
    assert 'href="https://example.org"' in html
