"""The staff page without a browser: form, estimate, run page, permissions."""

import pytest

from steering import services
from steering.models import Optimization

pytestmark = pytest.mark.django_db


def test_staff_only(client, annotator):
    client.force_login(annotator.user)
    assert client.get("/steering/").status_code == 302
    assert client.post("/steering/runs/", {}).status_code == 302
    assert not Optimization.objects.exists()


def test_estimate_partial(client, staff_user, settings):
    settings.GENERATION_COST_PER_IMAGE = {"flux": 0.05}
    client.force_login(staff_user)
    r = client.get("/steering/estimate/", {"backend": "flux", "max_images": "40"})
    html = r.content.decode()
    assert r.status_code == 200 and 'id="estimate"' in html
    assert "<b>40</b> images" in html
    rows = {
        part.split('"', 1)[0]: part.split("</tr>")[0]
        for part in html.split('data-backend="')[1:]
    }
    assert "2.00 USD" in rows["flux"] and "<b>flux</b>" in rows["flux"]
    assert "1.56 USD" in rows["gemini"] and "<b>" not in rows["gemini"]
    assert "0.00 USD" in rows["procedural"]
    # A nonsense budget falls back to the default instead of failing.
    r = client.get("/steering/estimate/", {"max_images": "x"})
    assert r.status_code == 200 and "<b>31</b> images" in r.content.decode()


def test_run_from_the_page(
    client, staff_user, steering_setup, django_capture_on_commit_callbacks, monkeypatch
):
    study, annotators = steering_setup
    queued = []
    monkeypatch.setattr(
        services,
        "optimization_enqueue",
        lambda *, optimization: queued.append(optimization.pk),
    )
    client.force_login(staff_user)
    page = client.get("/steering/").content.decode()
    target = f"{study.pk}:{annotators[3].pk}"
    assert f'value="{target}"' in page
    assert "Cost before running" in page and 'data-backend="gemini"' in page
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(
            "/steering/runs/",
            {
                "target": target,
                "prompt": "a mountain lake",
                "proposer": "attribute",
                "backend": "procedural",
                "rounds": 2,
                "per_round": 2,
                "max_images": 5,
            },
        )
    opt = Optimization.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/steering/runs/{opt.pk}/"
    assert queued == [opt.pk] and opt.created_by == staff_user
    html = client.get(r["Location"]).content.decode()
    assert 'hx-trigger="every 2s"' in html and "No round yet." in html
    services.optimization_run(optimization_id=opt.pk)
    part = client.get(f"/steering/runs/{opt.pk}/progress/").content.decode()
    assert "hx-trigger" not in part  # finished: polling stops
    assert 'id="steer-before"' in part and 'id="steer-after"' in part
    assert part.count("data-round=") == 3


def test_bad_input_is_shown_and_writes_nothing(client, staff_user, steering_setup):
    study, annotators = steering_setup
    client.force_login(staff_user)
    r = client.post(
        "/steering/runs/",
        {
            "target": f"{study.pk}:{annotators[0].pk}",
            "prompt": "a cat",
            "proposer": "attribute",
            "backend": "procedural",
            "rounds": 2,
            "per_round": 2,
            "max_images": 100000,
        },
    )
    assert r.status_code == 400
    assert "Maximum images must be between 1 and 500" in r.content.decode()
    assert not Optimization.objects.exists()
