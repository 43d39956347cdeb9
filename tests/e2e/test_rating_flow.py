"""The annotator flow in a real browser (Chromium via Playwright, live server)."""

import os
import re

import pytest
from django.urls import reverse

from annotation.models import Annotator, Assignment, Participation, Rating
from tests.factories import StudyFactory
from tests.items import row_of

from .conftest import SCREENSHOT_DIR, add_artworks

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def join_url(live_server, study, **extra) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"t": study.invite_token, **extra}.items())
    return live_server.url + reverse("annotation:join", args=[study.slug]) + "?" + query


def wait_ready(page) -> str:
    """Wait until the rater takes input; return the item it shows (its token)."""
    rater = page.locator("#rater[data-state=ready]")
    rater.wait_for()
    return rater.get_attribute("data-assignment")


def wait_changed(page, old: str) -> str:
    page.wait_for_function(
        "old => { const r = document.getElementById('rater');"
        " return r && r.dataset.state === 'ready' && r.dataset.assignment !== old }",
        arg=str(old),
    )
    return wait_ready(page)


def consent_with_keyboard(page) -> None:
    page.locator("#id_agree").focus()
    page.keyboard.press("Space")
    page.keyboard.press("Tab")  # to the submit button
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/instructions$"))
    # "Start rating" takes the focus by itself (autofocus is applied a moment
    # after the page loads), so Enter starts.
    page.wait_for_function("document.activeElement.textContent === 'Start rating'")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/s/[^/]+/$"))


@pytest.fixture
def study(transactional_db):
    study = StudyFactory(
        name="Abstract art",
        raters_per_image=3,
        quota_per_annotator=20,
        completion_code="DONE-2026",
        instructions="Rate how much **you** like each image. Trust your first feeling.",
    )
    add_artworks(study, 24)
    return study


def test_invite_join_rate_twenty_with_keyboard_skip_reload_finish(
    live_server, new_page, study
):
    page = new_page()
    page.goto(join_url(live_server, study))
    assert "I agree to take part." in page.content()
    consent_with_keyboard(page)
    annotator = Annotator.objects.get()

    # Instructions on "?", closed with Escape.
    wait_ready(page)
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    assert "Trust your first feeling" in page.locator("#help").inner_text()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()

    # Pause: the image is hidden and digit keys do nothing until resumed.
    current = wait_ready(page)
    page.keyboard.press("p")
    assert page.locator("#pause-overlay").is_visible()
    page.keyboard.press("5")
    page.keyboard.press("p")
    assert not page.locator("#pause-overlay").is_visible()
    assert wait_ready(page) == current
    assert not Rating.objects.exists()

    rated = skipped = 0
    reloaded = False
    seen = []
    double = None
    while rated < 20:
        current = wait_ready(page)
        seen.append(current)
        assert page.locator("#progress-text").inner_text() == f"{rated} of 20 rated"
        if rated == 4 and not skipped:
            page.keyboard.press("s")
            skipped += 1
        elif rated == 7:
            # A double press: the second press must not rate the next image.
            double = current
            page.keyboard.press("4")
            page.keyboard.press("4")
            rated += 1
        else:
            page.keyboard.press(str(1 + rated % 7))
            rated += 1
        if rated == 10 and not reloaded:
            # Reload mid-way: the same image and progress come back.
            reloaded = True
            nxt = wait_changed(page, current)
            page.reload()
            assert wait_ready(page) == nxt
            assert page.locator("#progress-text").inner_text() == "10 of 20 rated"
        elif rated < 20:
            wait_changed(page, current)

    page.wait_for_url(re.compile(r"/done$"))
    assert page.locator("#completion-code").inner_text() == "DONE-2026"
    assert Rating.objects.filter(annotator=annotator).count() == 20
    assert Assignment.objects.filter(annotator=annotator, status="skipped").count() == 1
    assert len(seen) == 21 and len(set(seen)) == 21
    p = Participation.objects.get(annotator=annotator)
    assert p.completed_at is not None and p.completion_code == "DONE-2026"
    # The double press rated its image once; the image after it got its own score.
    after = seen[seen.index(double) + 1]
    assert Rating.objects.get(assignment=row_of(double)).score == 4
    assert Rating.objects.get(assignment=row_of(after)).score == 2


def test_prolific_returning_with_same_pid_continues(live_server, new_page, study):
    ids = {
        "PROLIFIC_PID": "60aa11bb22cc33dd44ee55ff",
        "STUDY_ID": "s1",
        "SESSION_ID": "x9",
    }
    page = new_page()
    page.goto(join_url(live_server, study, **ids))
    consent_with_keyboard(page)
    for score in ("6", "2", "7"):
        current = wait_ready(page)
        page.keyboard.press(score)
        wait_changed(page, current)
    current = wait_ready(page)
    page.context.close()

    # Another browser (no cookies), same PID and Prolific session: one click on
    # Continue (opening a link signs nobody in), then back to the same image.
    page = new_page()
    page.goto(join_url(live_server, study, **ids))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"**/s/{study.slug}/")
    assert page.url.endswith(f"/s/{study.slug}/")
    assert wait_ready(page) == current
    assert page.locator("#progress-text").inner_text() == "3 of 20 rated"
    annotator = Annotator.objects.get()
    assert (annotator.source, annotator.external_id) == (
        "prolific",
        ids["PROLIFIC_PID"],
    )
    p = Participation.objects.get(annotator=annotator)
    assert (p.external_study_id, p.external_session_id) == ("s1", "x9")


def in_viewport(page, selector: str) -> None:
    vw, vh = page.viewport_size["width"], page.viewport_size["height"]
    for box in [el.bounding_box() for el in page.locator(selector).all()]:
        assert box is not None, selector
        assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
        assert box["x"] + box["width"] <= vw + 0.5, (selector, box, vw)
        assert box["y"] + box["height"] <= vh + 0.5, (selector, box, vh)


@pytest.mark.parametrize(
    "name,viewport,mobile",
    [("phone", (390, 844), True), ("desktop", (1366, 768), False)],
)
def test_image_and_buttons_fit_without_scrolling(
    live_server, new_page, study, name, viewport, mobile
):
    page = new_page(viewport, is_mobile=mobile, has_touch=mobile, device_scale_factor=2)
    page.goto(join_url(live_server, study))
    consent_with_keyboard(page)
    current = wait_ready(page)
    page.keyboard.press("5")
    wait_changed(page, current)
    in_viewport(page, "#current-image")
    in_viewport(page, ".scale button")
    in_viewport(page, "button.skip")
    in_viewport(page, "#pause-link")
    assert page.evaluate(
        "document.scrollingElement.scrollHeight <= window.innerHeight"
        " && document.scrollingElement.scrollWidth <= window.innerWidth"
    )
    # The picture itself, as drawn (object-fit: contain), is large.
    drawn = page.evaluate(
        """() => { const i = document.getElementById('current-image');
        const s = Math.min(i.clientWidth / i.naturalWidth,
                           i.clientHeight / i.naturalHeight);
        return [i.naturalWidth * s, i.naturalHeight * s]; }"""
    )
    assert min(drawn) >= 0.5 * min(viewport)
    if os.environ.get("PALATE_SCREENSHOTS"):
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / f"rating-{name}.png"))
