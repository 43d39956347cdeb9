"""Only the right person reaches a study (issue 10, findings 1 and 2).

Membership (joined through the study's own link, consented) is checked by the
engine, so the API and the pages refuse alike; a browser session reaches only the
studies entered through their own links; a Prolific PID alone takes over nobody.
"""

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation import services
from annotation.models import Annotator, Participation, Rating
from core.exceptions import NotMember
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def join_post(client, study, **extra):
    return client.post(
        reverse("annotation:join", args=[study.slug]),
        {"t": study.invite_token, "agree": "on", **extra},
    )


@pytest.fixture
def two_studies(db):
    a, b = StudyFactory(slug="study-a"), StudyFactory(slug="study-b")
    make_images(a, 3)
    make_images(b, 3, start=100)
    return a, b


# --- finding 1: membership is the engine's own check -----------------------------


def test_engine_refuses_a_claim_without_membership(two_studies):
    a, b = two_studies
    annotator = join(AnnotatorFactory(), b)
    with pytest.raises(NotMember):
        services.assignment_claim(annotator=annotator, study=a)
    # A participation without consent (e.g. a page visit) is not membership.
    services.participation_get_or_create(annotator=annotator, study=a)
    with pytest.raises(NotMember):
        services.assignment_claim(annotator=annotator, study=a)
    assert services.assignment_claim(annotator=annotator, study=b)


def test_api_annotator_of_another_study_gets_403(two_studies):
    a, b = two_studies
    annotator = join(AnnotatorFactory(), b)
    r = api(annotator.user).post(f"/api/v1/studies/{a.pk}/assignments/next/")
    assert r.status_code == 403
    assert r.json()["code"] == "not_a_member"
    assert "joined this study" in r.json()["detail"]
    assert not Rating.objects.exists()
    assert api(annotator.user).post(
        f"/api/v1/studies/{b.pk}/assignments/next/"
    ).status_code in (200, 204)


def test_consent_page_without_the_invite_token_admits_nobody(client, two_studies):
    a, b = two_studies
    join_post(client, b)
    url = reverse("annotation:consent", args=[a.slug])
    for data in ({"agree": "on"}, {"agree": "on", "t": "guess"}):
        r = client.post(url, data)
        assert r.status_code == 403, data
        assert "Please use your study link" in r.content.decode()
    assert not Participation.objects.filter(study=a, consented_at__isnull=False)
    assert client.get(reverse("annotation:rate", args=[a.slug])).status_code == 403


def test_an_annotator_joins_a_second_study_through_its_own_link(client, two_studies):
    a, b = two_studies
    join_post(client, b)
    r = join_post(client, a)
    assert r.status_code == 302
    assert Annotator.objects.count() == 1  # the same account, now in both
    assert Participation.objects.filter(consented_at__isnull=False).count() == 2
    for study in (a, b):
        client.post(reverse("annotation:start", args=[study.slug]))
        r = client.get(reverse("annotation:rate", args=[study.slug]))
        assert r.status_code == 200


def test_staff_preview_any_study_without_a_link(client, two_studies, staff_user):
    a, _ = two_studies
    r = api(staff_user).post(f"/api/v1/studies/{a.pk}/assignments/next/")
    assert r.status_code == 200  # admitted by the engine, participation recorded
    assert Participation.objects.get(annotator__user=staff_user).consented_at
    client.force_login(staff_user)
    assert client.get(reverse("annotation:rate", args=[a.slug])).status_code in (
        200,
        302,
    )


# --- finding 2: a PID takes over nobody --------------------------------------------


PID = "60aa11bb22cc33dd44ee55ff"


def test_pid_through_another_studys_link_never_reaches_the_victims_study(
    two_studies,
):
    p1, p2 = two_studies
    victim = Client()
    join_post(victim, p1, PROLIFIC_PID=PID, STUDY_ID="s1", SESSION_ID="victim-sess")
    account = Annotator.objects.get(external_id=PID)

    attacker = Client()
    # Opening the link signs nobody in.
    r = attacker.get(
        reverse("annotation:join", args=[p2.slug])
        + f"?t={p2.invite_token}&PROLIFIC_PID={PID}&SESSION_ID=x"
    )
    assert r.status_code == 200 and "_auth_user_id" not in attacker.session
    # Consenting through P2's link gives a session for P2 only.
    join_post(attacker, p2, PROLIFIC_PID=PID, SESSION_ID="attacker-sess")
    assert attacker.session["_auth_user_id"] == str(account.user_id)
    for name in ("rate", "instructions", "done", "pause"):
        r = attacker.get(reverse(f"annotation:{name}", args=[p1.slug]))
        assert r.status_code == 403, name
        assert "another study" in r.content.decode()
    r = attacker.post(reverse("annotation:consent", args=[p1.slug]), {"agree": "on"})
    assert r.status_code == 403
    # The session is not an API credential for annotators.
    r = attacker.post(f"/api/v1/studies/{p1.pk}/assignments/next/")
    assert r.status_code in (401, 403)
    assert not Rating.objects.exists()
    # ...and the victim's own session still works.
    victim.post(reverse("annotation:start", args=[p1.slug]))
    assert victim.get(reverse("annotation:rate", args=[p1.slug])).status_code == 200


def test_returning_pid_needs_the_session_id_that_began_the_study(two_studies):
    p1, _ = two_studies
    join_post(Client(), p1, PROLIFIC_PID=PID, SESSION_ID="sess-1")
    other = Client()
    for session in ("sess-2", ""):
        r = join_post(other, p1, PROLIFIC_PID=PID, SESSION_ID=session)
        assert r.status_code == 403, session
        assert "Prolific session does not match" in r.content.decode()
        assert "_auth_user_id" not in other.session
    assert join_post(other, p1, PROLIFIC_PID=PID, SESSION_ID="sess-1").status_code == (
        302
    )


def test_a_signed_in_browser_is_not_switched_silently(client, two_studies):
    p1, _ = two_studies
    join_post(Client(), p1, PROLIFIC_PID=PID, SESSION_ID="s")
    join_post(client, p1)  # this browser: an invite participant
    me = client.session["_auth_user_id"]
    r = client.get(
        reverse("annotation:join", args=[p1.slug])
        + f"?t={p1.invite_token}&PROLIFIC_PID={PID}&SESSION_ID=s"
    )
    assert r.status_code == 200
    assert "signed in as another participant" in r.content.decode()
    assert client.session["_auth_user_id"] == me


@pytest.mark.parametrize("bad", ["x\x00y", "a b", "{{%PROLIFIC_PID%}}", "x" * 129])
def test_bad_pid_is_a_400_page_and_writes_nothing(client, two_studies, bad):
    p1, _ = two_studies
    r = join_post(client, p1, PROLIFIC_PID=bad)
    assert r.status_code == 400
    assert "PROLIFIC_PID" in r.content.decode()
    r = client.get(
        reverse("annotation:join", args=[p1.slug]),
        {"t": p1.invite_token, "PROLIFIC_PID": bad},
    )
    assert r.status_code == 400
    assert not Annotator.objects.exists()
