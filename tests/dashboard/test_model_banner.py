"""Every page that shows a model's output carries the random-weights banner when
that model's backbone ran on random weights, and only then (issue 22, finding 4).
One template tag draws it on every page, fed by one selector."""

import pytest
from django.urls import reverse

from rewardmodel.models import TrainingRun
from steering.models import Optimization

from .conftest import make_version

BANNER = b'class="banner danger random-weights"'


def _pages(study, person, version):
    run = TrainingRun.objects.create(study=study, status="succeeded", progress=1.0)
    version.training_run = run
    version.save(update_fields=["training_run"])
    opt = Optimization.objects.create(
        study=study,
        annotator=person,
        base_prompt="a fox in a forest",
        proposer="attribute",
        backend="procedural",
        rounds=1,
        per_round=1,
        max_images=2,
        model_version_id=version.pk,
    )
    return {
        "staff home": reverse("dashboard:home"),
        "model": reverse("dashboard:model"),
        "training run": reverse("dashboard:run", args=[run.pk]),
        "annotators": reverse("dashboard:annotators", args=[study.pk]),
        "annotator": reverse("dashboard:annotator", args=[study.pk, person.pk]),
        "steering": reverse("steering:index"),
        "steering run": reverse("steering:detail", args=[opt.pk]),
    }


@pytest.mark.parametrize("weights_loaded", [False, True])
def test_every_page_with_model_output_says_so(
    staff_client, rated_study, weights_loaded
):
    study, annotators = rated_study
    version = make_version(study, annotators, lambda i: 0.6, weights=weights_loaded)
    for name, url in _pages(study, annotators[0], version).items():
        body = staff_client.get(url).content
        assert (body.count(BANNER) == 1) is not weights_loaded, name
        assert (f"model v{version.pk} (".encode() in body) is not weights_loaded


def test_a_steering_run_warns_about_the_version_that_scored_it(
    staff_client, rated_study
):
    """A run keeps the warning of the version that scored it, even once a version
    with real weights is active."""
    study, annotators = rated_study
    scored_by = make_version(study, annotators, lambda i: 0.6, weights=False)
    pages = _pages(study, annotators[0], scored_by)
    scored_by.is_active = False
    scored_by.status = "retired"
    scored_by.save(update_fields=["is_active", "status"])
    make_version(study, annotators, lambda i: 0.6, weights=True)
    assert BANNER in staff_client.get(pages["steering run"]).content
    for name in ("staff home", "steering", "annotator"):
        assert BANNER not in staff_client.get(pages[name]).content, name
