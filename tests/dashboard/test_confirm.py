"""Destructive dashboard actions ask first, on the server (issue 22, finding 1):
a POST without the confirmation field changes nothing and answers with a page
that says, in numbers, what the action would do; only a confirmed POST acts.
No template carries an inline event handler (the CSP forbids them)."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from annotation import services
from annotation.models import (
    Annotator,
    AttentionCheck,
    ModerationEvent,
    Rating,
)
from rewardmodel.models import ModelVersion
from tests.factories import (
    AnnotatorFactory,
    StudyFactory,
    joined,
    make_images,
    png_bytes,
)

from .conftest import make_version, rate_all

pytestmark = pytest.mark.django_db


def _confirm_page(r) -> str:
    assert r.status_code == 200
    body = r.content.decode()
    assert 'id="confirm"' in body and 'name="confirmed" value="yes"' in body
    return re.sub(r"\s+", " ", body)


def test_no_inline_event_handlers_anywhere():
    """``script-src 'self'`` blocks inline handlers: none may exist."""
    pattern = re.compile(r"\son[a-z]+\s*=|javascript:", re.IGNORECASE)
    roots = [Path(settings.BASE_DIR) / "templates", Path(settings.BASE_DIR) / "static"]
    found = [
        str(path)
        for root in roots
        for path in root.rglob("*")
        if path.suffix in {".html", ".js"}
        and "vendor" not in path.parts
        and pattern.search(path.read_text())
    ]
    assert found == []


def test_exclude_asks_with_the_numbers_of_this_study_only(staff_client, db):
    """The annotator of finding 2: 3 ratings here, 2 in another study."""
    here = StudyFactory(name="Here", raters_per_image=2, quota_per_annotator=3)
    there = StudyFactory(name="There", raters_per_image=2, quota_per_annotator=2)
    make_images(here, 3)
    make_images(there, 2, start=20)
    person = AnnotatorFactory()
    rate_all(here, [person], lambda i, img: 4)
    rate_all(there, [person], lambda i, img: 4)
    url = reverse("dashboard:annotator_action", args=[here.pk, person.pk])
    body = _confirm_page(staff_client.post(url, {"action": "exclude", "reason": "r"}))
    assert (
        f"Exclude annotator {person.public_id} from study Here: invalidates 3 "
        "ratings and reopens 3 slots in study Here"
    ) in body
    assert "Their ratings in other studies stay valid (1 other study)" in body
    assert '<input type="hidden" name="reason" value="r">' in body
    # Nothing changed.
    assert Rating.objects.filter(annotator=person, is_valid=True).count() == 5
    assert not ModerationEvent.objects.exists()
    # Confirmed: this study only.
    r = staff_client.post(
        url, {"action": "exclude", "reason": "r", "confirmed": "yes"}, follow=True
    )
    assert "3 slots reopened in Here" in r.content.decode()
    valid = Rating.objects.filter(annotator=person, is_valid=True)
    assert list(valid.values_list("study__name", flat=True).distinct()) == ["There"]
    assert valid.count() == 2
    page = staff_client.get(reverse("dashboard:annotator", args=[here.pk, person.pk]))
    assert "excluded from this study" in page.content.decode()
    # The annotators tables: excluded in Here, active in There.
    for study, status in ((here, "excluded"), (there, "active")):
        url = reverse("dashboard:annotators", args=[study.pk])
        body = staff_client.get(url, {"status": status}).content.decode()
        assert re.findall(r'data-annotator="([^"]+)"', body) == [person.public_id]


def test_exclude_everywhere_lists_every_study(staff_client, db):
    here = StudyFactory(name="Here", raters_per_image=2, quota_per_annotator=3)
    there = StudyFactory(name="There", raters_per_image=2, quota_per_annotator=2)
    make_images(here, 3)
    make_images(there, 2, start=20)
    person = AnnotatorFactory()
    rate_all(here, [person], lambda i, img: 4)
    rate_all(there, [person], lambda i, img: 4)
    url = reverse("dashboard:annotator_action", args=[here.pk, person.pk])
    body = _confirm_page(staff_client.post(url, {"action": "exclude_all"}))
    assert "Here: invalidates 3 valid ratings, ends 0 live leases and reopens 3" in body
    assert (
        "There: invalidates 2 valid ratings, ends 0 live leases and reopens 2" in body
    )
    assert "In all: 5 slots reopen in 2 studies" in body
    assert Annotator.objects.get(pk=person.pk).status == "active"
    staff_client.post(url, {"action": "exclude_all", "confirmed": "yes"})
    assert Annotator.objects.get(pk=person.pk).status == "excluded"
    page = staff_client.get(reverse("dashboard:annotator", args=[there.pk, person.pk]))
    assert "excluded from every study" in page.content.decode()
    assert not Rating.objects.filter(annotator=person, is_valid=True).exists()
    assert sorted(
        ModerationEvent.objects.values_list("study__name", "slots_reopened")
    ) == [("Here", 3), ("There", 2)]


def test_erase_asks_then_erases(staff_client, rated_study):
    study, annotators = rated_study
    person = annotators[0]
    Annotator.objects.filter(pk=person.pk).update(external_id="PROLIFIC-XYZ")
    n = Rating.objects.filter(annotator=person, is_valid=True).count()
    url = reverse("dashboard:annotator_action", args=[study.pk, person.pk])
    body = _confirm_page(staff_client.post(url, {"action": "erase"}))
    assert f"invalidates {n} valid ratings" in body and "Prolific PID" in body
    assert Annotator.objects.get(pk=person.pk).erased_at is None
    r = staff_client.post(url, {"action": "erase", "confirmed": "yes"}, follow=True)
    assert f"{person.public_id} erased; {n} slots reopened" in r.content.decode()
    erased = Annotator.objects.get(pk=person.pk)
    assert erased.erased_at is not None and erased.external_id == ""


def test_pause_acts_at_once(staff_client, rated_study):
    study, annotators = rated_study
    url = reverse("dashboard:annotator_action", args=[study.pk, annotators[1].pk])
    assert staff_client.post(url, {"action": "pause"}).status_code == 302
    assert Annotator.objects.get(pk=annotators[1].pk).status == "paused"


def test_remove_check_asks_with_what_it_will_do(staff_client, db):
    study = StudyFactory()
    check = services.attention_check_create(
        study=study,
        data=png_bytes(3),
        filename="c.png",
        expected_min=1,
        expected_max=2,
    )
    url = reverse("dashboard:check_remove", args=[study.pk, check.pk])
    body = _confirm_page(staff_client.post(url))
    assert f"Nobody has been shown attention check {check.pk}: it is deleted" in body
    assert AttentionCheck.objects.filter(pk=check.pk).exists()
    staff_client.post(url, {"confirmed": "yes"})
    assert not AttentionCheck.objects.filter(pk=check.pk).exists()


def test_making_a_version_active_asks_first(staff_client, rated_study):
    study, annotators = rated_study
    old = make_version(study, annotators, lambda i: 0.6)
    new = make_version(study, annotators, lambda i: 0.7, active=False)
    url = reverse("dashboard:promote", args=[new.pk])
    body = _confirm_page(staff_client.post(url))
    assert f"Predictions for study {study.name} switch from v{old.pk}" in body
    assert f"to v{new.pk}" in body
    assert ModelVersion.objects.get(pk=old.pk).is_active
    staff_client.post(url, {"confirmed": "yes"})
    assert ModelVersion.objects.get(pk=new.pk).is_active


def test_an_excluded_participation_sees_why_on_the_rating_page(client, db):
    study = StudyFactory(raters_per_image=2, quota_per_annotator=3)
    make_images(study, 3)
    person = joined(client, study)
    services.participation_exclude(annotator=person, study=study)
    r = client.get(reverse("annotation:rate", args=[study.slug]))
    assert r.status_code == 403
    assert "You have been excluded from this study." in r.content.decode()
