"""Destructive staff actions ask first, in the browser (issue 22, findings 1-2).

Debian Chromium via Playwright against the live server: Exclude (from the study
on screen, with the numbers of that study only), Exclude from every study (the
studies it touches listed) and Remove an attention check each lead to a
confirmation step; Cancel changes nothing, Confirm acts. The confirmation is the
server's own page, so it needs no script; no page logs a Content-Security-Policy
violation or a script error, and no native dialog is ever opened (the old inline
``confirm()`` never ran under the CSP, and the action fired at once)."""

import pytest

from annotation import services
from annotation.models import AttentionCheck, ModerationEvent, Rating
from tests.factories import AnnotatorFactory, StudyFactory, join, png_bytes

from .conftest import add_artworks

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _rate(annotator, study, n):
    for _ in range(n):
        (lease,) = services.assignment_claim(annotator=annotator, study=study)
        services.rating_submit(assignment_id=lease.pk, annotator=annotator, score=4)


@pytest.fixture
def two_studies(transactional_db):
    """The annotator of finding 2: 3 ratings in Study A, 2 in Study B (one
    pseudonymous id in both), and an attention check in A."""
    a = StudyFactory(name="Study A", raters_per_image=2, quota_per_annotator=5)
    b = StudyFactory(name="Study B", raters_per_image=2, quota_per_annotator=5)
    add_artworks(a, 4, size=(192, 192))
    add_artworks(b, 4, start=10, size=(192, 192))
    person = join(AnnotatorFactory(), a, b)
    _rate(person, a, 3)
    _rate(person, b, 2)
    check = services.attention_check_create(
        study=a, data=png_bytes(5, (64, 64)), expected_min=2
    )
    return a, b, person, check


def _staff_page(live_server, new_page):
    page = new_page((1280, 860))
    problems, dialogs = [], []
    # CSP violations are logged as console errors ("Refused to execute ...
    # because it violates the following Content Security Policy directive").
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if "Content Security Policy" in m.text or "Refused to" in m.text
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(live_server.url + "/admin/login/?next=/staff/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff-123")
    page.click("input[type=submit]")
    page.wait_for_url("**/staff/")
    return page, problems, dialogs


def _valid(person, study):
    return Rating.objects.filter(annotator=person, study=study, is_valid=True).count()


def test_exclude_and_remove_ask_cancel_changes_nothing_confirm_acts(
    live_server, new_page, staff_user, two_studies
):
    a, b, person, check = two_studies
    page, problems, dialogs = _staff_page(live_server, new_page)
    annotator_url = f"{live_server.url}/staff/studies/{a.pk}/annotators/{person.pk}/"
    page.goto(annotator_url)
    page.fill("input[name=reason]", "browser test")

    # Exclude: the confirmation states what happens in this study, in numbers.
    page.click("#exclude")
    page.wait_for_selector("#confirm")
    text = page.locator("#confirm-lines").inner_text()
    assert (
        f"Exclude annotator {person.public_id} from study Study A: invalidates 3 "
        "ratings and reopens 3 slots in study Study A"
    ) in text
    assert "other studies stay valid (1 other study)" in text
    # Cancel: back on the annotator's page, nothing changed.
    page.click("#confirm-cancel")
    page.wait_for_url(annotator_url)
    assert (_valid(person, a), _valid(person, b)) == (3, 2)
    assert not ModerationEvent.objects.exists()
    assert "excluded" not in page.locator("#annotator-status").inner_text()

    # Exclude from every study lists both studies; cancelled as well.
    page.click("#exclude-all")
    page.wait_for_selector("#confirm")
    text = page.locator("#confirm-lines").inner_text()
    assert "Study A: invalidates 3 valid ratings" in text
    assert "Study B: invalidates 2 valid ratings" in text
    page.click("#confirm-cancel")
    page.wait_for_url(annotator_url)
    assert (_valid(person, a), _valid(person, b)) == (3, 2)

    # Confirm: excluded from Study A only.
    page.fill("input[name=reason]", "browser test")
    page.click("#exclude")
    page.click("#confirm-yes")
    page.wait_for_selector("#annotator-status:text('excluded from this study')")
    assert "3 slots reopened in Study A" in page.locator(".staff-messages").inner_text()
    assert (_valid(person, a), _valid(person, b)) == (0, 2)
    event = ModerationEvent.objects.get()
    assert (event.study, event.slots_reopened, event.reason) == (a, 3, "browser test")

    # Remove an attention check: Cancel keeps it, Confirm removes it.
    quality_url = f"{live_server.url}/staff/studies/{a.pk}/quality/"
    page.goto(quality_url)
    page.click(f"#remove-check-{check.pk}")
    page.wait_for_selector("#confirm")
    assert "Nobody has been shown attention check" in page.inner_text("#confirm")
    page.click("#confirm-cancel")
    page.wait_for_url(quality_url)
    assert AttentionCheck.objects.filter(pk=check.pk, is_active=True).exists()
    page.click(f"#remove-check-{check.pk}")
    page.click("#confirm-yes")
    page.wait_for_selector(".staff-messages:has-text('Attention check deleted')")
    assert not AttentionCheck.objects.filter(pk=check.pk).exists()

    assert dialogs == []
    assert problems == []
