"""The dashboard's pages: staff only, what each shows, actions, query bounds."""

import re

import pytest
from django.urls import reverse

from annotation.models import Annotator, Image, ModerationEvent, Rating
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

from .conftest import make_version, rate_all

pytestmark = pytest.mark.django_db


def pages(study, annotator):
    return [
        reverse("dashboard:home"),
        reverse("dashboard:study", args=[study.pk]),
        reverse("dashboard:annotators", args=[study.pk]),
        reverse("dashboard:annotator", args=[study.pk, annotator.pk]),
        reverse("dashboard:quality", args=[study.pk]),
        reverse("dashboard:model"),
    ]


def test_pages_are_staff_only(client, rated_study, django_user_model):
    study, annotators = rated_study
    for url in pages(study, annotators[0]):
        r = client.get(url)
        assert r.status_code == 302 and "/admin/login/" in r["Location"], url
    user = django_user_model.objects.create_user("plain", password="pw-plain-123")
    client.force_login(user)
    for url in pages(study, annotators[0]):
        assert client.get(url).status_code == 302, url
    r = client.post(
        reverse("dashboard:annotator_action", args=[study.pk, annotators[0].pk]),
        {"action": "exclude"},
    )
    assert r.status_code == 302
    assert Annotator.objects.get(pk=annotators[0].pk).status == "active"


def test_every_page_renders_for_staff(staff_client, rated_study):
    study, annotators = rated_study
    make_version(study, annotators, lambda i: 0.5 + 0.1 * i)
    for url in pages(study, annotators[0]):
        r = staff_client.get(url)
        assert r.status_code == 200, url
        charts = b"<svg" in r.content
        assert charts == ("/studies/" in url and "/quality/" not in url), url


def test_home_lists_studies_with_progress_and_links(staff_client, rated_study):
    study, _ = rated_study
    body = staff_client.get(reverse("dashboard:home")).content.decode()
    assert study.name in body
    # 6 images x 3 raters, all rated: 18 of 18.
    assert "18 of 18 ratings (100.0%)" in body
    for name in ("generation:studies", "dashboard:model", "admin:index", "api-docs"):
        assert reverse(name) in body
    # The public home page leads staff here.
    assert reverse("dashboard:home") in staff_client.get("/").content.decode()


def test_study_page_shows_histogram_and_copyable_links(staff_client, db):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=2)
    make_images(study, 4)
    rate_all(study, [AnnotatorFactory()], lambda i, img: 4)  # 2 images get 1
    body = staff_client.get(reverse("dashboard:study", args=[study.pk])).content
    body = body.decode()
    # Histogram bars carry "<valid ratings>: <images>".
    assert "<title>0: 2</title>" in body and "<title>1: 2</title>" in body
    assert f"join?t={study.invite_token}" in body
    assert "PROLIFIC_PID={{%PROLIFIC_PID%}}" in body
    assert 'id="active-now">1<' in body  # rated within the last 10 minutes


def test_annotators_sort_and_filter(staff_client, rated_study):
    study, annotators = rated_study
    make_version(study, annotators, lambda i: [0.55, 0.9, 0.7, 0.6][i])
    url = reverse("dashboard:annotators", args=[study.pk])
    order = re.findall(
        r'data-annotator="([^"]+)"',
        staff_client.get(url, {"sort": "accuracy", "dir": "desc"}).content.decode(),
    )
    assert order == [annotators[i].public_id for i in (1, 2, 3, 0)]
    order = re.findall(
        r'data-annotator="([^"]+)"',
        staff_client.get(url, {"sort": "accuracy", "dir": "asc"}).content.decode(),
    )
    assert order == [annotators[i].public_id for i in (0, 3, 2, 1)]
    # htmx asks for the table only.
    r = staff_client.get(
        url,
        {"sort": "ratings"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="annotator-table",
    )
    assert b"<html" not in r.content and b'id="annotator-table"' in r.content
    annotators[2].status = "paused"
    annotators[2].save()
    body = staff_client.get(url, {"status": "paused"}).content.decode()
    assert re.findall(r'data-annotator="([^"]+)"', body) == [annotators[2].public_id]


def test_annotators_table_pages_after_sorting(staff_client, rated_study, monkeypatch):
    """Large studies render one page of the sorted table (issue 29: 10,000 rows
    took seconds); the pages together are the whole order, nothing twice."""
    from dashboard import selectors

    study, annotators = rated_study
    make_version(study, annotators, lambda i: [0.55, 0.9, 0.7, 0.6][i])
    monkeypatch.setattr(selectors, "PAGE_SIZE", 3)
    url = reverse("dashboard:annotators", args=[study.pk])
    seen = []
    for page in ("1", "2", "3", "x"):
        body = staff_client.get(
            url, {"sort": "accuracy", "dir": "desc", "page": page}
        ).content.decode()
        seen.append(re.findall(r'data-annotator="([^"]+)"', body))
    assert seen[0] == [annotators[i].public_id for i in (1, 2, 3)]
    assert seen[1] == [annotators[0].public_id]
    assert seen[2] == seen[1]  # past the end: the last page
    assert seen[3] == seen[0]  # not a number: the first
    assert "1–3 of 4 matching" in staff_client.get(url).content.decode()


def test_exclude_from_the_dashboard_is_logged_and_reopens_slots(
    staff_client, staff_user, rated_study
):
    study, annotators = rated_study
    victim = annotators[0]
    rated = set(victim.ratings.values_list("image_id", flat=True))
    r = staff_client.post(
        reverse("dashboard:annotator_action", args=[study.pk, victim.pk]),
        {"action": "exclude", "reason": "failed checks", "confirmed": "yes"},
    )
    assert r.status_code == 302
    victim.refresh_from_db()
    assert victim.status == "active"  # excluded from this study only
    assert victim.participations.get(study=study).status == "excluded"
    event = ModerationEvent.objects.get()
    assert (event.user, event.action, event.reason) == (
        staff_user,
        "exclude",
        "failed checks",
    )
    assert event.slots_reopened == len(rated)
    reopened = set(Image.objects.filter(open_slots=1).values_list("pk", flat=True))
    assert reopened == rated
    assert not Rating.objects.filter(annotator=victim, is_valid=True).exists()
    # Excluding twice is refused with a message and logs nothing new.
    r = staff_client.post(
        reverse("dashboard:annotator_action", args=[study.pk, victim.pk]),
        {"action": "exclude", "confirmed": "yes"},
        follow=True,
    )
    assert "already excluded from" in r.content.decode()
    assert ModerationEvent.objects.count() == 1


def test_pause_and_resume_from_the_dashboard(staff_client, rated_study):
    study, annotators = rated_study
    url = reverse("dashboard:annotator_action", args=[study.pk, annotators[1].pk])
    staff_client.post(url, {"action": "pause"})
    assert Annotator.objects.get(pk=annotators[1].pk).status == "paused"
    staff_client.post(url, {"action": "resume"})
    assert Annotator.objects.get(pk=annotators[1].pk).status == "active"
    assert list(
        ModerationEvent.objects.order_by("pk").values_list("action", flat=True)
    ) == ["pause", "resume"]


def test_random_weights_banner(staff_client, rated_study):
    study, annotators = rated_study
    make_version(study, annotators, lambda i: 0.6, weights=False)
    for url in (reverse("dashboard:model"), reverse("dashboard:home")):
        assert b"RANDOM" in staff_client.get(url).content, url


def test_nightly_time_is_editable(staff_client):
    from django_celery_beat.models import PeriodicTask

    r = staff_client.post(
        reverse("dashboard:nightly"), {"hour": "4", "minute": "15", "enabled": "on"}
    )
    assert r.status_code == 302
    task = PeriodicTask.objects.get(name="rewardmodel: nightly retraining")
    assert (task.crontab.hour, task.crontab.minute, task.enabled) == ("4", "15", True)
    staff_client.post(reverse("dashboard:nightly"), {"hour": "25", "minute": "0"})
    task.refresh_from_db()
    assert task.crontab.hour == "4"  # bad input changes nothing


def test_exclusion_reopens_exactly_its_slots_and_the_study_ends_at_15(staff_client, db):
    study = StudyFactory(raters_per_image=15, quota_per_annotator=3)
    images = make_images(study, 4)
    crowd = [AnnotatorFactory() for _ in range(30)]
    # Enough people to fill every image (each rates up to 3 of the 4).
    rate_all(study, crowd, lambda i, img: 1 + (i + img.pk) % 7)
    assert all(i.rating_count == 15 for i in Image.objects.all())
    victim = crowd[0]
    theirs = set(victim.ratings.values_list("image_id", flat=True))
    assert len(theirs) == 3
    staff_client.post(
        reverse("dashboard:annotator_action", args=[study.pk, victim.pk]),
        {"action": "exclude", "reason": "test", "confirmed": "yes"},
    )
    open_now = dict(Image.objects.values_list("pk", "open_slots"))
    assert open_now == {i.pk: (1 if i.pk in theirs else 0) for i in images}
    # Newcomers fill exactly those slots; then nothing is left to deal.
    fresh = [AnnotatorFactory() for _ in range(3)]
    rate_all(study, fresh, lambda i, img: 4)
    dealt = Rating.objects.filter(annotator__in=fresh)
    assert sorted(dealt.values_list("image_id", flat=True)) == sorted(theirs)
    for image in Image.objects.all():
        assert image.rating_count == 15 and image.open_slots == 0
        assert image.ratings.filter(is_valid=True).count() == 15
    late = AnnotatorFactory()
    assert services_claim(study, late) == []


def services_claim(study, annotator):
    from annotation import services

    join(annotator, study)
    return services.assignment_claim(annotator=annotator, study=study)


def _section(body: str, section_id: str) -> str:
    start = body.index(f'id="{section_id}"')
    return body[start : body.index("</section>", start)]


def test_annotator_page_draws_predicted_against_actual(staff_client, rated_study):
    study, annotators = rated_study
    version = make_version(study, annotators, lambda i: 0.6)
    person = annotators[1]
    stored = version.heldout_predictions.get(annotator=person)
    url = reverse("dashboard:annotator", args=[study.pk, person.pk])
    body = staff_client.get(url).content.decode()
    chart = _section(body, "heldout")
    assert "<svg" in chart and 'class="ref"' in chart  # the y = x line
    # One point per stored image, each naming the image, its score and prediction.
    tips = re.findall(
        r"<title>image (\d+): rated (\d+), predicted ([\d.]+)</title>", chart
    )
    expected = [(i, round(a), round(p, 2)) for i, a, p in stored.points()]
    assert sorted((int(i), int(a), float(p)) for i, a, p in tips) == sorted(expected)
    assert f"a sample of {stored.n} of their {stored.n_total} held-out" in chart
    # The MAE with its stored interval, on the page and in the table.
    assert "1.000 <small>[0.800, 1.250]</small>" in _section(body, "model-mae")
    table = staff_client.get(reverse("dashboard:annotators", args=[study.pk]))
    assert "1.00<small> [0.80, 1.25]</small>" in table.content.decode()


def test_annotator_page_without_heldout_predictions_says_so(staff_client, rated_study):
    study, annotators = rated_study
    url = reverse("dashboard:annotator", args=[study.pk, annotators[0].pk])
    body = staff_client.get(url).content.decode()
    assert "No model version covers this study yet" in _section(body, "heldout")
    version = make_version(study, annotators, lambda i: 0.6, heldout=False)
    body = staff_client.get(url).content.decode()
    chart = _section(body, "heldout")
    assert "<svg" not in chart and 'id="heldout-empty"' in chart
    assert f"Model v{version.pk} has no held-out predictions" in chart


def test_remove_an_attention_check_from_the_quality_page(staff_client, rated_study):
    """A check nobody was shown is deleted; one already dealt is retired (kept, with
    its answers, and dealt no more); a check of another study is not found."""
    from django.utils import timezone

    from annotation import services
    from annotation.models import AttentionCheck, StreamItem
    from tests.factories import png_bytes

    study, annotators = rated_study
    fresh, dealt = (
        services.attention_check_create(study=study, data=png_bytes(s), expected_min=2)
        for s in (40, 41)
    )
    StreamItem.objects.create(  # answered: the removal must keep it
        annotator=annotators[0],
        study=study,
        kind="attention",
        check_item=dealt,
        due_after=0,
        status="answered",
        score=2,
        passed=True,
        shown_at=timezone.now(),
        answered_at=timezone.now(),
        time_on_item_ms=1500,
    )

    def remove(check_id, study_id=study.pk):
        url = reverse("dashboard:check_remove", args=[study_id, check_id])
        return staff_client.post(url, {"confirmed": "yes"}, follow=True)

    page = reverse("dashboard:quality", args=[study.pk])
    assert f'action="/staff/studies/{study.pk}/quality/checks/{fresh.pk}/remove/"' in (
        staff_client.get(page).content.decode()
    )
    assert "Attention check deleted." in remove(fresh.pk).content.decode()
    assert not AttentionCheck.objects.filter(pk=fresh.pk).exists()
    assert "retired" in remove(dealt.pk).content.decode()
    dealt.refresh_from_db()
    assert dealt.is_active is False
    other = StudyFactory()
    body = remove(dealt.pk, study_id=other.pk).content.decode()
    assert "No attention check" in body
    assert (
        staff_client.get(
            reverse("dashboard:check_remove", args=[study.pk, dealt.pk])
        ).status_code
        == 405
    )
