"""The prompt-steering staff page in Chromium: a staff member picks an annotator
and a prompt, sees the cost estimate follow the budget and backend, runs it, and
watches a real Celery worker's rounds arrive until the before/after gallery shows
both scores."""

import os
import re
import time

import pytest

from annotation.models import StreamItem
from steering.models import Optimization
from tests.celery_worker import running_worker
from tests.steering.conftest import steering_setup  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def worker(redis_broker, transactional_db, tmp_path):
    with running_worker(broker=redis_broker, tmp_path=tmp_path, name="steer") as w:
        yield w


def test_staff_runs_an_optimisation_and_watches_it(
    steering_setup,  # noqa: F811 (the imported fixture)
    worker,
    live_server,
    new_page,
    staff_user,
    settings,
):
    study, annotators = steering_setup
    settings.GENERATION_COST_PER_IMAGE = {"flux": 0.05}
    proc, log = worker
    page = new_page()
    page.goto(live_server.url + "/admin/login/?next=/steering/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff-123")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/steering/$"))
    page.select_option("#id_target", f"{study.pk}:{annotators[2].pk}")
    page.fill("#id_prompt", "a sailing boat on a lake")
    page.select_option("#id_proposer", "beam")
    # The estimate follows budget and backend before anything runs.
    page.select_option("#id_backend", "flux")
    page.fill("#id_max_images", "12")
    flux = page.locator('#estimate tr[data-backend="flux"]')
    flux.locator("td.cost", has_text="0.60 USD").wait_for()
    assert flux.get_attribute("aria-current") == "true"
    page.select_option("#id_backend", "procedural")
    page.locator('#estimate tr[data-backend="procedural"][aria-current]').wait_for()
    page.fill("#id_rounds", "3")
    page.fill("#id_per_round", "3")
    page.fill("#id_max_images", "10")
    assert page.input_value("#id_caution") == "1.0"  # one posterior sd by default
    page.fill("#id_caution", "0.5")
    page.click("#steer-form button[type=submit]")
    page.wait_for_url(re.compile(r"/steering/runs/\d+/$"))
    opt = Optimization.objects.get()
    assert (opt.annotator_id, opt.max_images, opt.proposer, opt.caution) == (
        annotators[2].pk,
        10,
        "beam",
        0.5,
    )
    # Rounds arrive while the page polls (no reload): the first row appears
    # before the last one, then the run finishes and polling stops.
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    seen_rounds = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        rows = page.locator("#steer-rounds tr[data-round]")
        seen_rounds.add(rows.count())
        if page.locator("#steer-status", has_text="Done").count():
            break
        assert proc.poll() is None, log.read_text()
        page.wait_for_timeout(300)
    else:
        pytest.fail("the run did not finish:\n" + log.read_text())
    # (Done may arrive in the swap right after the rows were counted.)
    seen_rounds.add(page.locator("#steer-rounds tr[data-round]").count())
    assert page.locator("#steer-rounds tr[data-round]").count() == 4
    # The rows came by polling, without a reload (a fast run may finish within
    # one polling interval, so intermediate states are not required).
    assert 0 in seen_rounds and 4 in seen_rounds, seen_rounds
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    assert re.search(r"/steering/runs/\d+/$", page.url)
    opt.refresh_from_db()
    assert opt.status == "done" and opt.images_used == 10
    before, after = page.locator("#steer-before"), page.locator("#steer-after")
    assert before.locator("img").evaluate("i => i.naturalWidth") > 0
    assert after.locator("img").evaluate("i => i.naturalWidth") > 0
    assert "a sailing boat on a lake" in after.inner_text()
    best = opt.round_rows.order_by("-index").first()
    shown = float(after.locator(".personal").inner_text())
    assert shown == pytest.approx(best.best_personal, abs=0.006)
    shown = float(after.locator(".population").inner_text())
    assert shown == pytest.approx(best.best_population, abs=0.006)
    shown = float(after.locator(".spread").inner_text())
    assert shown == pytest.approx(best.best_spread, abs=0.006)
    assert "personal score − 0.5 × its spread" in page.inner_text(".gen-facts")
    # Close the loop: the blind paired test goes to the annotator's stream.
    if page.locator("#send-paired-test").count():
        page.click("#send-paired-test")
        page.locator('#paired-tests tr[data-status="pending"]').wait_for()
        test = opt.paired_tests.get()
        assert {test.base_item_id, test.optimised_item_id} <= set(
            StreamItem.objects.filter(annotator=annotators[2]).values_list(
                "pk", flat=True
            )
        )
    if os.environ.get("PALATE_SCREENSHOTS"):
        from .conftest import SCREENSHOT_DIR

        page.screenshot(path=str(SCREENSHOT_DIR / "steering-run.png"), full_page=True)
