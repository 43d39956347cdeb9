"""The taste portrait in Chromium: a participant reaches it from the rating
page, sees their extremes, the model's predictions and the crowd comparison,
and answers "this is me" with one click, on a desktop, on a phone and with
JavaScript off; staff see the same portrait on the annotator's dashboard page
and edit the study's settings there. axe-core audits every page (conftest).
With PALATE_SCREENSHOTS=1 it writes docs/screenshots/portrait-*.png."""

import os
import re

import pytest
from django.urls import reverse

from annotation import services as ann
from annotation.models import Annotator
from portrait.models import PortraitFeedback, PortraitSettings
from tests.factories import StudyFactory

from .conftest import SCREENSHOT_DIR, add_artworks

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

TINY = "open_clip:palate-tiny-vit"
SHOTS = os.environ.get("PALATE_SCREENSHOTS") == "1"


def shot(page, name):
    if SHOTS:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(SCREENSHOT_DIR / f"portrait-{name}.png"), full_page=True
        )


@pytest.fixture
def study(transactional_db, settings, tmp_path):
    """40 pictures rated by 8 people (each image by all of them), a trained and
    promoted version, the portrait on from 5 ratings."""
    from rewardmodel import services as rm

    settings.REWARDMODEL_DIR = str(tmp_path / "rm")
    settings.REWARDMODEL_BACKBONE = TINY
    study = StudyFactory(
        name="Abstract art", raters_per_image=12, quota_per_annotator=1000
    )
    add_artworks(study, 40, size=(320, 320))
    people = [ann.annotator_create() for _ in range(8)]
    for i, person in enumerate(people):
        ann.participation_consent(
            annotator=person, study=study, token=study.invite_token
        )
        rate(person, study, 40, lambda im, i=i: taste(im, (i % 3) - 1))
    run = rm.training_run_execute(
        run_id=rm.training_run_create(study=study, promote="always").pk
    )
    assert run.status == "succeeded", run.error
    PortraitSettings.objects.create(study=study, enabled=True, min_ratings=5)
    return study


def taste(image, own: float) -> int:
    """Everyone likes warm pictures (red over blue); each person adds their own
    liking or dislike of bright ones: a taste the model can see in the pixels."""
    from PIL import Image as PILImage
    from PIL import ImageStat

    with image.file.open("rb") as f:
        r, g, b = ImageStat.Stat(PILImage.open(f).convert("RGB")).mean
    warm, bright = (r - b) / 128, (r + g + b) / 384 - 1
    return int(min(7, max(1, round(4 + 2.5 * warm + 2.5 * own * bright))))


def rate(person, study, n, score):
    for _ in range(n):
        lease = ann.assignment_claim(annotator=person, study=study)[0]
        ann.rating_submit(
            assignment_id=lease.pk, annotator=person, score=score(lease.image)
        )


def enter_and_rate(page, live_server, study, n=14) -> Annotator:
    """Join by the invite link, consent, start; then ``n`` ratings (made
    through the engine: the rating page itself is tested elsewhere)."""
    url = reverse("annotation:join", args=[study.slug]) + f"?t={study.invite_token}"
    page.goto(live_server.url + url)
    page.check("#id_agree")
    page.get_by_role("button", name="I agree, continue").click()
    page.wait_for_url(re.compile(r"/instructions$"))
    page.get_by_role("button", name="Start rating").click()
    page.wait_for_url(re.compile(r"/s/[^/]+/$"))
    person = Annotator.objects.order_by("-pk").first()
    rate(person, study, n, lambda im: taste(im, 1.0))
    page.goto(live_server.url + reverse("annotation:rate", args=[study.slug]))
    page.get_by_role("link", name="Your taste").click()
    page.wait_for_url(re.compile(r"/portrait$"))
    return person


def pictures_loaded(page) -> None:
    """Every picture (lazy ones too) decodes: its token served its file."""
    assert page.evaluate(
        "Promise.all([...document.querySelectorAll('.portrait img')]"
        ".map(i => { i.loading = 'eager'; return i.decode().then(() => i); }))"
        ".then(all => all.length >= 8 && all.every(i => i.naturalWidth > 0))"
    )


def test_desktop_portrait_and_one_click_answer(live_server, new_page, study):
    page = new_page((1366, 900))
    person = enter_and_rate(page, live_server, study)
    for section in ("#portrait-rated", "#portrait-predicted", "#portrait-crowd"):
        page.locator(section).wait_for()
    page.wait_for_load_state("load")
    pictures_loaded(page)
    assert (
        page.locator("#portrait-certainty")
        .inner_text()
        .startswith("Based on your 14 ratings")
    )
    first = page.locator("form.answer").first
    first.get_by_role("button", name="This is me").click()
    page.wait_for_url(re.compile(r"/portrait#fb-"))
    assert (
        page.locator("form.answer")
        .first.get_by_role("button", name="This is me")
        .get_attribute("aria-pressed")
        == "true"
    )
    row = PortraitFeedback.objects.get(annotator=person)
    assert (row.answer, row.side) == ("me", "like")
    shot(page, "desktop")


def test_phone_portrait_fits_the_width(live_server, new_page, study):
    page = new_page((390, 844), is_mobile=True, has_touch=True, device_scale_factor=2)
    enter_and_rate(page, live_server, study)
    page.wait_for_load_state("load")
    pictures_loaded(page)
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    # Two pictures a row, and answer buttons big enough for a thumb (44 px).
    sizes = page.evaluate(
        "[...document.querySelectorAll('form.answer button')]"
        ".map(b => b.getBoundingClientRect().height)"
    )
    assert sizes and min(sizes) >= 44
    shot(page, "phone")


def test_without_javascript_the_answer_is_a_plain_form(live_server, new_page, study):
    page = new_page((1280, 900), java_script_enabled=False)
    person = enter_and_rate(page, live_server, study)
    form = page.locator("form.answer").last  # a predicted least-liked image
    form.get_by_role("button", name="Not me").click()
    page.wait_for_url(re.compile(r"/portrait#fb-"))
    row = PortraitFeedback.objects.get(annotator=person)
    assert (row.answer, row.side) == ("not_me", "dislike")
    assert page.locator('button[value="not_me"][aria-pressed="true"]').count() == 1


def test_staff_see_it_on_the_annotator_page_and_edit_the_settings(
    live_server, new_page, study, staff_user
):
    participant = new_page((1280, 900))
    person = enter_and_rate(participant, live_server, study)
    page = new_page((1366, 900))
    page.goto(live_server.url + "/admin/login/?next=/staff/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff-123")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/staff/$"))
    page.goto(
        live_server.url + reverse("dashboard:annotator", args=[study.pk, person.pk])
    )
    page.locator("#portrait #portrait-predicted").wait_for()  # loaded by htmx
    assert page.locator("#portrait form.answer").count() == 0
    page.locator("#portrait").scroll_into_view_if_needed()
    shot(page, "staff")
    page.goto(live_server.url + reverse("dashboard:study", args=[study.pk]))
    page.locator("#portrait #id_min_ratings").wait_for()
    page.fill("#id_min_ratings", "30")
    page.get_by_role("button", name="Save portrait settings").click()
    page.wait_for_url(re.compile(rf"/staff/studies/{study.pk}/#portrait$"))
    assert PortraitSettings.objects.get(study=study).min_ratings == 30
    page.locator("#portrait-state", has_text="on").wait_for()
