"""The researchers' dashboard in a real browser (Debian Chromium via Playwright,
live server) with a real Celery worker on Redis training the reward model.

A staff user opens the dashboard, sorts annotators by prediction quality, opens
one (their predicted-against-actual chart drawn from the stored held-out
predictions), excludes them, sees the study's alpha the worker counted (and
counted again after the exclusion), presses Retrain now and watches the run
finish. With
PALATE_SCREENSHOTS=1 it also writes docs/screenshots/dashboard-*.png."""

import os
import time

import numpy as np
import pytest

from annotation import services as ann
from annotation.models import Annotator, ModerationEvent, Rating, StreamItem
from annotation.quality.selectors import study_alpha
from dashboard.tasks import refresh_figures
from rewardmodel import services as rm
from rewardmodel.models import HeldOutPredictions, ModelVersion, TrainingRun
from tests.celery_worker import redis_broker, running_worker  # noqa: F401
from tests.factories import AnnotatorFactory, StudyFactory, join, png_bytes

from .conftest import SCREENSHOT_DIR, add_artworks

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

TINY = "open_clip:palate-tiny-vit"
SHOTS = os.environ.get("PALATE_SCREENSHOTS") == "1"


def shot(page, name):
    if SHOTS:
        page.screenshot(
            path=str(SCREENSHOT_DIR / f"dashboard-{name}.png"), full_page=True
        )


@pytest.fixture
def rm_env(settings, tmp_path, monkeypatch):
    settings.REWARDMODEL_DIR = str(tmp_path / "rm")
    settings.REWARDMODEL_BACKBONE = TINY
    return {"PALATE_RM_DIR": str(tmp_path / "rm"), "PALATE_RM_BACKBONE": TINY}


@pytest.fixture
def worker(redis_broker, rm_env, transactional_db, tmp_path):  # noqa: F811
    """A real ``celery -A config worker`` on the test database and broker."""
    with running_worker(
        broker=redis_broker,
        tmp_path=tmp_path,
        name="dash",
        env={**rm_env, "HF_HUB_OFFLINE": "1"},
    ) as (proc, log_path):
        yield proc, log_path


def _rated_study():
    """48 pictures, 8 annotators with seeded tastes, 4 ratings per picture, some
    attention checks and repeats answered; one model version trained inline.
    (With 24 pictures the held-out test images, 17% of them, sometimes gave no
    annotator a pair to score, depending on the ids the database handed out.)"""
    study = StudyFactory(name="Abstract art", slug="abstract-art", raters_per_image=4)
    add_artworks(study, 48)
    ann.quality_config_update(
        study=study, attention_check_rate=0.15, repeat_rate=0.2, repeat_gap=3
    )
    ann.attention_check_create(
        study=study,
        data=png_bytes(99, (64, 64)),
        expected_min=2,
        instruction="Please press 2 for this image.",
    )
    rng = np.random.default_rng(7)
    people = [join(AnnotatorFactory(), study) for _ in range(8)]
    taste = rng.normal(size=len(people))
    progress = True
    while progress:
        progress = False
        for i, a in enumerate(people):
            item = ann.stream_item_next(annotator=a, study=study, rated=10**6)
            if item is not None:
                score = (
                    2
                    if item.kind == "attention" and i != 3
                    else int(rng.integers(1, 8))
                )
                ann.stream_item_answer(item_id=item.pk, annotator=a, score=score)
            leases = ann.assignment_claim(annotator=a, study=study)
            if not leases:
                continue
            image = leases[0].image
            raw = 4 + 2 * taste[i] * np.sin(image.pk) + rng.normal(0, 0.7)
            ann.rating_submit(
                assignment_id=leases[0].pk,
                annotator=a,
                score=int(np.clip(round(raw), 1, 7)),
            )
            progress = True
    run = rm.training_run_create(study=study, config={"steps": 60})
    rm.training_run_execute(run_id=run.pk)
    return study, people


def reload_until(page, done, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, page.content()[-2000:]
        page.wait_for_timeout(300)
        page.reload()


def test_staff_sorts_excludes_and_retrains(live_server, new_page, worker, staff_user):
    proc, log_path = worker
    study, people = _rated_study()
    assert ModelVersion.objects.filter(is_active=True).count() == 1
    assert StreamItem.objects.filter(status="answered").exists()
    ratings_before = Rating.objects.count()

    page = new_page((1280, 860))
    page.goto(live_server.url + "/admin/login/?next=/staff/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff-123")
    page.click("input[type=submit]")
    page.wait_for_url("**/staff/")
    assert "Abstract art" in page.locator("#studies").inner_text()
    # The backbone here has random weights: the dashboard says so, loudly.
    assert page.locator(".banner.danger").is_visible()
    shot(page, "home")

    page.click("#studies a:text('Abstract art')")
    page.wait_for_url(f"**/staff/studies/{study.pk}/")
    assert study.invite_token in page.locator("#invite-link").input_value()
    shot(page, "study")

    page.click("nav.staff-sub a:text('Annotators')")
    page.wait_for_url("**/annotators/")
    # Sort by prediction quality (best first), through htmx.
    page.click("th a[data-sort=accuracy]")
    page.wait_for_selector("th[aria-sort=descending] a[data-sort=accuracy]")
    assert "sort=accuracy&dir=desc" in page.url
    values = [
        float(v)
        for v in page.locator("td[data-value]").evaluate_all(
            "cells => cells.map(c => c.dataset.value).filter(v => v !== '')"
        )
    ]
    assert len(values) >= 2 and values == sorted(values, reverse=True)
    shot(page, "annotators")

    # Open the best-predicted annotator, exclude them.
    first = page.locator("#annotator-table tbody tr").first
    public_id = first.get_attribute("data-annotator")
    first.locator("a").first.click()
    page.wait_for_selector(f"h1:has-text('{public_id}')")
    victim = Annotator.objects.get(public_id=public_id)
    # Predicted against actual: one point per held-out image the version stored
    # for them (the version trained above keeps the report fit's predictions).
    stored = HeldOutPredictions.objects.get(version__is_active=True, annotator=victim)
    points = page.locator("#heldout svg circle.pt")
    assert points.count() == stored.n >= 2
    assert page.locator("#heldout svg line.ref").count() == 1
    shot(page, "annotator")
    theirs = victim.ratings.count()
    page.fill("input[name=reason]", "browser test")
    page.click("#exclude")  # asks first, on a confirmation page
    page.click("#confirm-yes")
    page.wait_for_selector("#annotator-status:text('excluded from this study')")
    assert "browser test" in page.locator("#events").inner_text()
    event = ModerationEvent.objects.get(annotator=victim)
    assert (event.action, event.user.username, event.slots_reopened) == (
        "exclude",
        "staff",
        theirs,
    )
    assert not Rating.objects.filter(annotator=victim, is_valid=True).exists()
    assert Rating.objects.count() == ratings_before  # kept, no longer valid

    page.click("nav.staff-sub a:text('Quality control')")
    page.wait_for_selector("#alpha")
    # Alpha is counted by the worker (the study page asked for it), never by a
    # page: reloaded until it is there. The beat's refresh (sent here, run by the
    # worker) then counts the exclusion in: the figure alpha gives directly.
    reload_until(page, lambda: page.locator("#alpha[data-pending]").count() == 0)
    assert "as of" in page.locator("#alpha").locator("..").inner_text()
    refresh_figures.delay()
    expected = f"{study_alpha(study=study)['alpha']:.3f}"
    reload_until(page, lambda: page.locator("#alpha").inner_text() == expected)
    shot(page, "quality")

    # Retrain now: a real worker runs it; the page follows it until it is done.
    page.click(".staff-top a:text('Model')")
    page.wait_for_selector("#retrain")
    page.select_option("select[name=study]", str(study.pk))
    page.click("#retrain")
    page.wait_for_url("**/staff/model/runs/**")
    run = TrainingRun.objects.order_by("-pk").first()
    assert run.trigger == "admin" and run.created_by == staff_user
    seen = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = page.locator("#run-status").get_attribute("data-status")
        seen.add(status)
        if status in ("succeeded", "failed"):
            break
        assert proc.poll() is None, log_path.read_text()
        page.wait_for_timeout(300)
    assert status == "succeeded", log_path.read_text()[-3000:]
    assert seen & {"queued", "running"}  # it was watched, not found finished
    log = page.locator("pre.log").inner_text()
    assert "snapshot" in log and "checkpoint" in log  # the worker's log, shown
    assert page.locator("#run-version").is_visible()
    shot(page, "run")
    run.refresh_from_db()
    # The excluded annotator's ratings were left out of the new version.
    assert run.version.data_counts["annotators"] == len(people) - 1
    page.click("#run-version a")
    page.wait_for_selector("#versions")
    shot(page, "model")
