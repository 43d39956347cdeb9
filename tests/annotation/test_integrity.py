"""Records are never deleted, erasure reopens slots before it pseudonymises, and
the one invariant check finds (and repairs) drift that hands made."""

import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import ProtectedError
from django.test import Client
from rest_framework.authtoken.models import Token

from annotation import services
from annotation.models import (
    Annotator,
    Assignment,
    Image,
    IntegrityAlert,
    Participation,
    Rating,
)
from annotation.tasks import check_integrity
from core.exceptions import Conflict
from tests.factories import AnnotatorFactory, join, make_images, rate_image

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def admin_client_(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def rated_and_leased(study, annotator):
    """The annotator rated one image and holds a lease on another."""
    join(annotator, study)
    (first,) = services.assignment_claim(annotator=annotator, study=study)
    services.rating_submit(assignment_id=first.pk, annotator=annotator, score=6)
    (second,) = services.assignment_claim(annotator=annotator, study=study)
    return first, second


def test_erasure_excludes_reopens_slots_then_pseudonymises(study):
    make_images(study, 3)
    annotator = services.annotator_create(
        source="prolific", external_id="PID123", demographics={"age_range": "30-39"}
    )
    Participation.objects.filter(annotator=annotator).update(
        external_study_id="S1", external_session_id="X1"
    )
    Token.objects.create(user=annotator.user)
    first, second = rated_and_leased(study, annotator)

    reopened = services.annotator_erase(annotator_id=annotator.pk, reason="request")

    assert reopened == 2
    a = Annotator.objects.get(pk=annotator.pk)
    assert a.status == "excluded" and a.erased_at is not None
    assert (a.external_id, a.demographics) == ("", {})
    assert a.status_reason == "erased: request"
    user = User.objects.get(pk=a.user_id)
    assert user.username == f"erased-{a.public_id}" and not user.is_active
    assert not user.has_usable_password() and not Token.objects.filter(user=user)
    p = Participation.objects.get(annotator=a)
    assert (p.external_study_id, p.external_session_id) == ("", "")
    # The rating is kept as an invalid record; both slots are open again.
    assert not Rating.objects.get(assignment=first).is_valid
    assert Assignment.objects.get(pk=second.pk).status == "expired"
    for image_id in (first.image_id, second.image_id):
        image = Image.objects.get(pk=image_id)
        assert (image.rating_count, image.lease_count) == (0, 0)
    # Idempotent, and an erased annotator is never re-activated.
    assert services.annotator_erase(annotator_id=annotator.pk) == 0
    with pytest.raises(Conflict):
        services.annotator_set_status(annotator=a, status="active")
    assert Annotator.objects.get(pk=a.pk).status == "excluded"


def test_erase_command_by_public_or_external_id(study, capsys):
    make_images(study, 2)
    one = services.annotator_create(source="prolific", external_id="P-1")
    two = AnnotatorFactory()
    rated_and_leased(study, one)
    call_command("erase_annotator", "P-1", "--source", "prolific")
    assert "2 slot(s) reopened" in capsys.readouterr().out
    call_command("erase_annotator", two.public_id, "--reason", "asked by mail")
    assert Annotator.objects.get(pk=two.pk).status_reason == "erased: asked by mail"
    with pytest.raises(CommandError, match="No annotator"):
        call_command("erase_annotator", "a-nobody")
    assert Annotator.objects.filter(erased_at__isnull=False).count() == 2


def test_admin_cannot_delete_records_and_erases_instead(study, admin_client_):
    make_images(study, 2)
    annotator = AnnotatorFactory()
    first, second = rated_and_leased(study, annotator)
    rating = Rating.objects.get(assignment=first)
    for url in (
        f"/admin/annotation/rating/{rating.pk}/delete/",
        f"/admin/annotation/assignment/{second.pk}/delete/",
        f"/admin/annotation/annotator/{annotator.pk}/delete/",
    ):
        assert admin_client_.post(url, {"post": "yes"}).status_code == 403, url
    for model in ("rating", "assignment", "annotator"):
        page = admin_client_.get(f"/admin/annotation/{model}/").content.decode()
        assert "delete_selected" not in page
    # The user behind an annotator cannot be deleted either (admin or code).
    r = admin_client_.post(
        f"/admin/auth/user/{annotator.user_id}/delete/", {"post": "yes"}
    )
    assert User.objects.filter(pk=annotator.user_id).exists(), r.status_code
    with pytest.raises(ProtectedError):
        User.objects.get(pk=annotator.user_id).delete()
    with pytest.raises(ProtectedError):
        Image.objects.get(pk=first.image_id).delete()
    assert Rating.objects.filter(pk=rating.pk, is_valid=True).exists()

    r = admin_client_.post(
        "/admin/annotation/annotator/",
        {"action": "erase", "_selected_action": [annotator.pk], "index": 0},
        follow=True,
    )
    assert "1 annotator(s) erased" in r.content.decode()
    assert not Rating.objects.get(pk=rating.pk).is_valid
    assert Image.objects.get(pk=first.image_id).rating_count == 0


@pytest.mark.allow_drift
def test_check_finds_each_kind_of_drift_and_repair_fixes_it(study, capsys):
    images = make_images(study, 4)
    # rating_count above its rows (as a deleted rating used to leave it)
    ratings = rate_image(images[0], 2)
    Rating.objects.filter(pk=ratings[0].pk).update(is_valid=False)
    # a live lease no counter knows of
    a = join(AnnotatorFactory(), study)
    (lease,) = services.assignment_claim(annotator=a, study=study)
    Image.objects.filter(pk=lease.image_id).update(lease_count=0)
    # a valid rating of an excluded annotator (counted: rows and counter agree)
    (cheat,) = rate_image(images[2], 1)
    Annotator.objects.filter(pk=cheat.annotator_id).update(status="excluded")
    # more valid rows than the target allows
    rate_image(images[3], study.raters_per_image)
    extra = AnnotatorFactory()
    Rating.objects.create(
        study=study, image=images[3], annotator=extra, score=2, is_valid=True
    )

    drift = services.integrity_check()
    assert drift.rating_count == [(images[0].pk, 2, 1), (images[3].pk, 3, 4)]
    assert drift.lease_count == [(lease.image_id, 0, 1)]
    assert drift.over_target == [(images[3].pk, 3, 4)]
    assert drift.excluded_valid_ratings == [cheat.pk]
    with pytest.raises(CommandError):
        call_command("check_integrity")
    assert "rating_count 2, rows 1" in capsys.readouterr().out

    call_command("check_integrity", "--repair", "--study", study.slug)
    assert "After repair: no drift" in capsys.readouterr().out
    assert services.integrity_check().ok
    assert Image.objects.get(pk=images[0].pk).rating_count == 1
    assert Image.objects.get(pk=lease.image_id).lease_count == 1
    assert not Rating.objects.get(pk=cheat.pk).is_valid
    # the surplus rating is the newest one, kept but no longer counted
    assert not Rating.objects.get(annotator=extra).is_valid
    assert Image.objects.get(pk=images[3].pk).rating_count == 3


@pytest.mark.allow_drift
def test_inactive_annotators_live_lease_is_drift_and_repaired(study):
    make_images(study, 1)
    a = join(AnnotatorFactory(), study)
    (lease,) = services.assignment_claim(annotator=a, study=study)
    Annotator.objects.filter(pk=a.pk).update(status="paused")  # bypassing the service
    assert services.integrity_check().inactive_leases == [lease.pk]
    services.integrity_repair()
    assert Assignment.objects.get(pk=lease.pk).status == "expired"
    assert Image.objects.get(pk=lease.image_id).lease_count == 0
    assert services.integrity_check().ok


@pytest.mark.allow_drift
def test_periodic_check_alerts_in_the_log_and_the_admin(study, admin_client_, caplog):
    (image,) = make_images(study, 1)
    assert check_integrity() == "no drift"
    assert not IntegrityAlert.objects.exists()
    rate_image(image, 1)
    Image.objects.filter(pk=image.pk).update(rating_count=0)
    with caplog.at_level(logging.ERROR, logger="annotation.integrity"):
        assert check_integrity() == "rating_count: 1"
    assert "Integrity drift" in caplog.text
    alert = IntegrityAlert.objects.get()
    assert alert.details["rating_count"] == [[image.pk, 0, 1]]
    page = admin_client_.get("/admin/annotation/study/").content.decode()
    assert "Integrity check: 1 open alert(s)" in page
    admin_client_.post(
        "/admin/annotation/integrityalert/",
        {"action": "resolve", "_selected_action": [alert.pk], "index": 0},
    )
    assert IntegrityAlert.objects.get().resolved_at is not None
    page = admin_client_.get("/admin/annotation/study/").content.decode()
    assert "Integrity check:" not in page


def test_raters_per_image_is_refused_once_images_exist(study, admin_client_):
    study.raters_per_image = 5
    study.save()  # no images yet: free to change
    make_images(study, 1)
    study.raters_per_image = 9
    with pytest.raises(ValidationError, match="cannot change once the study has"):
        study.full_clean()
    with pytest.raises(ValidationError, match="keeps the target it entered with"):
        study.save()
    study.refresh_from_db()
    assert study.raters_per_image == 5
    assert Image.objects.get(study=study).target_ratings == 5
    page = admin_client_.get(f"/admin/annotation/study/{study.pk}/change/")
    assert 'name="raters_per_image"' not in page.content.decode()  # read-only
    study.name = "Renamed"
    study.save()  # other fields still change
