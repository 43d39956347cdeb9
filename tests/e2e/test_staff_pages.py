"""One way around the staff pages, in Chromium at a laptop's 1366 px.

A staff member signs in from the public home page and moves only through the
shared navigation: studies, a study's progress, its annotators (found by
Prolific PID), one annotator, "Steer toward this person", generation (three new
prompts ticked, the estimate, a paid batch confirmed after one cancel), the
study's exports, the model page (every column of its metrics table inside its
card). axe-core audits each page on the way (conftest). With
PALATE_SCREENSHOTS=1 it writes docs/screenshots/generation-*.png."""

import os
import re

import pytest

from annotation.models import Annotator
from generation import services as gen
from generation.models import GenerationJob
from generation.services import jobs as gen_jobs

from .conftest import SCREENSHOT_DIR
from .test_dashboard import _rated_study, rm_env  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

PID = "5f8a9b0c1d2e3f4a5b6c7d8e"
NAV = ["Studies", "Model", "Generation", "Steering", "Admin", "API docs"]


def shot(page, name):
    if os.environ.get("PALATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)


def nav(page, name):
    """Follow a link of the shared navigation, checking it is all there."""
    top = page.locator("header.staff-top nav a")
    assert top.all_inner_texts() == NAV, page.url
    top.get_by_text(name, exact=True).click()


def estimate_text(page):
    return re.sub(r"\s+", " ", page.locator("#gen-estimate").inner_text())


def columns_outside_card(page, table):
    """Header cells of ``table`` not wholly inside its card's box."""
    return page.evaluate(
        """sel => {
          const t = document.querySelector(sel), card = t.closest('.card');
          const c = card.getBoundingClientRect();
          return [...t.querySelectorAll('thead th')].filter(th => {
            const r = th.getBoundingClientRect();
            return r.left < c.left - 0.5 || r.right > c.right + 0.5;
          }).map(th => th.innerText);
        }""",
        table,
    )


@pytest.fixture
def queued(monkeypatch):
    """Items handed to the broker (the hosted API is never called here)."""
    sent = []
    monkeypatch.setattr(
        gen_jobs, "items_enqueue", lambda *, item_ids, backend: sent.append(backend)
    )
    monkeypatch.setenv("BFL_API_KEY", "test-key")
    return sent


def test_one_way_around_the_staff_pages(
    live_server,
    new_page,
    staff_user,
    rm_env,  # noqa: F811 (the imported fixture)
    queued,
    settings,
):
    settings.GENERATION_COST_PER_IMAGE = {"flux": 0.04}
    study, people = _rated_study()
    Annotator.objects.filter(pk=people[2].pk).update(source="prolific", external_id=PID)
    for i in range(15):
        gen.prompt_create(study=study, text=f"an older prompt number {i}")

    page = new_page((1366, 900))
    page.goto(live_server.url + "/admin/login/?next=/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff-123")
    page.click("input[type=submit]")
    page.wait_for_url(live_server.url + "/")
    # The public home page links what a signed-in staff member can use.
    assert page.locator("#staff-links a").all_inner_texts() == [
        "Studies",
        "Reward model",
        "Generation",
        "Prompt steering",
        "Admin",
        "API documentation",
    ]
    page.click("#staff-links a:text('Studies')")
    page.wait_for_url("**/staff/")
    page.click(f"#studies a:text('{study.name}')")
    page.wait_for_url(f"**/staff/studies/{study.pk}/")

    # Annotators: find the Prolific participant by the start of their PID.
    page.click("nav.staff-sub a:text('Annotators')")
    page.locator("input[name=q]").press_sequentially(PID[:8].upper())
    rows = page.locator("#annotator-table tbody tr")
    page.wait_for_function(
        "() => document.querySelectorAll('#annotator-table tbody tr').length === 1"
    )
    assert rows.first.get_attribute("data-annotator") == people[2].public_id
    assert PID in rows.first.inner_text()
    rows.first.locator("a").first.click()
    page.wait_for_url(f"**/annotators/{people[2].pk}/")

    # Steer toward this person: the steering form has them chosen.
    page.click("#steer-link")
    page.wait_for_url("**/steering/?target=*")
    assert page.locator("#id_target").input_value() == f"{study.pk}:{people[2].pk}"

    # Generation: three new prompts among fifteen; only they are queued.
    nav(page, "Generation")
    page.wait_for_url("**/generation/")
    page.click(f"a:text('{study.name}')")
    page.fill("#id_text", "a red kite\na blue kite\na green kite")
    page.click("form[enctype] button[type=submit]")
    page.locator(".staff-messages").get_by_text("Added 3 prompts").wait_for()
    ticked = page.locator("#gen-jobs input[name=prompts]:checked")
    assert sorted(
        ticked.evaluate_all("bs => bs.map(b => b.parentElement.innerText.trim())")
    ) == [
        "a blue kite",
        "a green kite",
        "a red kite",
    ]
    assert "3 prompts × 4 images = 12 images on procedural" in estimate_text(page)
    page.select_option("#id_backend", "flux")
    page.fill("#id_n_seeds", "2")
    assert "3 prompts × 2 images = 6 images on flux" in estimate_text(page)
    assert "0.24 USD" in estimate_text(page)
    shot(page, "generation-study")
    page.click("#gen-jobs button[type=submit]")
    summary = page.locator("#confirm-summary")
    assert "3 prompts × 2 images = 6 images on flux" in summary.inner_text()
    assert "0.24 USD" in summary.inner_text()
    shot(page, "generation-confirm")
    page.click("#confirm-cancel")  # dismissing queues nothing
    page.wait_for_url(f"**/generation/studies/{study.pk}/")
    assert GenerationJob.objects.count() == 0 and queued == []
    assert page.locator("#gen-jobs input[name=prompts]:checked").count() == 3
    page.select_option("#id_backend", "flux")
    page.fill("#id_n_seeds", "2")
    page.click("#gen-jobs button[type=submit]")
    page.click("#confirm-queue")
    page.locator(".staff-messages").get_by_text("Queued 3 jobs, 6 images").wait_for()
    assert GenerationJob.objects.filter(backend="flux").count() == 3
    assert queued == ["flux"]

    # The study's exports, inside the same navigation; Studies leads back.
    page.click("nav.staff-sub a:text('Exports')")
    page.wait_for_url(f"**/staff/studies/{study.pk}/exports/")
    nav(page, "Studies")
    page.wait_for_url("**/staff/")

    # The model page: every column of the metrics table inside its card.
    nav(page, "Model")
    page.wait_for_url("**/staff/model/")
    page.locator("#baselines").wait_for()
    assert columns_outside_card(page, "#baselines") == []
    page.set_viewport_size({"width": 1920, "height": 1000})
    assert columns_outside_card(page, "#baselines") == []
