"""In Chromium: the steering pages warn when the model behind their scores runs
its backbone on random weights (issue 22, finding 4), and a first page load
asks for nothing that answers 404 (the favicon, finding 13)."""

import re

import pytest

from steering.models import Optimization
from tests.dashboard.conftest import make_version, rate_all
from tests.factories import AnnotatorFactory, StudyFactory, make_images

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _steering_run(weights_loaded: bool) -> Optimization:
    study = StudyFactory(raters_per_image=2, quota_per_annotator=4)
    make_images(study, 4)
    people = rate_all(study, [AnnotatorFactory(), AnnotatorFactory()], lambda i, m: 3)
    version = make_version(study, people, lambda i: 0.6, weights=weights_loaded)
    return Optimization.objects.create(
        study=study,
        annotator=people[0],
        base_prompt="a fox in a forest",
        proposer="attribute",
        backend="procedural",
        rounds=1,
        per_round=1,
        max_images=2,
        model_version_id=version.pk,
    )


def _login(page, live_server, then: str) -> list:
    """Sign in, recording every response that fails from the first request on."""
    failed = []
    page.on(
        "response",
        lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None,
    )
    page.goto(live_server.url + f"/admin/login/?next={then}")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff-123")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(re.escape(then) + "$"))
    return failed


@pytest.mark.parametrize("weights_loaded", [False, True])
def test_steering_pages_warn_about_random_weights(
    live_server, new_page, staff_user, weights_loaded
):
    opt = _steering_run(weights_loaded)
    page = new_page()
    failed = _login(page, live_server, "/steering/")
    banner = page.locator(".banner.random-weights")
    assert banner.count() == (0 if weights_loaded else 1)
    page.goto(live_server.url + f"/steering/runs/{opt.pk}/")
    if weights_loaded:
        assert banner.count() == 0
    else:
        assert banner.is_visible()
        assert f"model v{opt.model_version_id}" in banner.inner_text()
        assert "RANDOM WEIGHTS" in banner.inner_text()
    # The icon the pages link answers (Chromium fetches it on its own time).
    icon = page.evaluate(
        "fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)"
    )
    assert icon == 200
    assert page.evaluate("fetch('/favicon.ico').then(r => r.status)") == 200
    assert failed == [], failed
