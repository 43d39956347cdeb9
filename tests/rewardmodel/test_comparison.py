"""Promotion compares the new and the active version on the same held-out
ratings: the test-split ratings newer than the active version's training data."""

import numpy as np
import pytest

from annotation import services as ann
from annotation.models import Rating
from rewardmodel import inference
from rewardmodel import services as rm
from rewardmodel.metrics import pairwise_accuracy
from rewardmodel.models import ModelVersion
from tests.factories import png_bytes

from .conftest import rate_study

pytestmark = pytest.mark.django_db


def _train(study):
    run = rm.training_run_execute(run_id=rm.training_run_create(study=study).pk)
    assert run.status == "succeeded", run.error
    return run


def _more_images(study, n: int, seed: int) -> None:
    for i in range(n):
        s = 9000 + seed * 1000 + i
        ann.image_create(
            study=study,
            data=png_bytes(s, size=(32, 32)),
            filename=f"m{i}.png",
            provenance={"rgb": [(s * 37) % 256, (s * 91) % 256, s % 256]},
        )


def test_both_versions_are_scored_on_the_same_new_held_out_ratings(rated_study):
    study, annotators = rated_study
    first = _train(study)
    v1 = first.version
    assert v1.is_active and first.comparison == {}  # nothing to compare with
    _more_images(study, 80, seed=5)
    rate_study(study, annotators, seed=1)

    second = _train(study)
    c = second.comparison
    assert c["possible"], c
    assert c["against"] == v1.pk and c["after_rating_id"] == first.last_rating_id
    compared = Rating.objects.filter(
        study=study,
        is_valid=True,
        split__in=["test_seen", "test_unseen"],
        pk__gt=first.last_rating_id,
    )
    assert c["n_ratings"] == compared.count() > 0

    # The active version's figure is what the served model scores on exactly
    # those ratings (inference.predict with v1; everyone here was fitted by v1).
    accs = []
    for a in annotators:
        mine = list(compared.filter(annotator=a).values_list("image_id", "score"))
        if not mine:
            continue
        scores = inference.predict(
            annotator=a, image_ids=[i for i, _ in mine], version=v1
        )["scores"]
        acc = pairwise_accuracy([s for _, s in mine], [scores[i] for i, _ in mine])
        if acc is not None:
            accs.append(acc)
    assert c["n_annotators"] == len(accs) >= 2
    assert c["active"]["mean"] == pytest.approx(float(np.mean(accs)))
    d = c["difference"]
    assert d["mean"] == pytest.approx(c["new"]["mean"] - c["active"]["mean"])
    assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]

    # The decision follows the paired difference, and says what it compared.
    v2 = second.version
    assert v2.is_active == (d["mean"] >= 0)
    assert f"newer than v{v1.pk}'s training data" in v2.promotion_reason
    assert "difference" in v2.promotion_reason
    assert f"compared with active v{v1.pk}" in second.log


def test_without_new_held_out_ratings_the_active_version_stays(rated_study):
    """Retraining on the same ratings: nothing held out from both exists, so
    nothing is compared and the active version stays (make it active by hand)."""
    study, _ = rated_study
    v1 = _train(study).version
    again = _train(study)
    assert not again.comparison["possible"]
    assert "no test-split rating is newer" in again.comparison["reason"]
    v1.refresh_from_db()
    assert v1.is_active and again.version.status == "candidate"


def _figure(t) -> str:
    lo, hi = t["ci95"]
    return f"pairwise accuracy, test split: {t['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def test_pages_and_the_api_show_held_out_figures_only(rated_study, client, staff_user):
    """/staff/, the run page and the versions table show the test figure with
    its split and interval, never the validation grid's best; the run page and
    the API show the paired comparison the promotion decided on."""
    study, annotators = rated_study
    _train(study)
    _more_images(study, 80, seed=5)
    rate_study(study, annotators, seed=1)
    run = _train(study)
    v = run.version
    t = v.test_accuracy
    assert t["split"] == "test_seen" and t["ci95"] is not None
    old_label = f"pairwise accuracy {v.primary_metric:.3f}"
    client.force_login(staff_user)

    home = client.get("/staff/").content.decode()
    page = client.get(f"/staff/model/runs/{run.pk}/").content.decode()
    model = client.get("/staff/model/").content.decode()
    active = ModelVersion.objects.get(is_active=True)
    assert _figure(active.test_accuracy) in home
    assert _figure(t) in page and old_label not in page and old_label not in home
    comparison = page.split('id="run-comparison">')[1].split("</p>")[0]
    c = run.comparison
    assert f"v{v.pk} {c['new']['mean']:.3f}" in comparison
    assert f"v{c['against']} {c['active']['mean']:.3f}" in comparison
    assert f"difference {c['difference']['mean']:+.3f}" in comparison
    row = model.split(f"<td>v{v.pk}</td>")[1].split("</tr>")[0]
    lo, hi = t["ci95"]
    assert f"{t['mean']:.3f} <small>[{lo:.3f}, {hi:.3f}]</small>" in row
    assert "Pairwise acc., test split [95%]" in model

    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(staff_user)
    listed = api.get("/api/v1/rewardmodel/versions/").json()
    listed = listed.get("results", listed)
    mine = next(x for x in listed if x["id"] == v.pk)
    assert mine["test_pairwise_accuracy"] == t
    assert mine["promotion_comparison"] == c
    assert mine["primary_metric"] == v.primary_metric  # kept; documented as validation
    got = api.get(f"/api/v1/rewardmodel/trainings/{run.pk}/").json()
    assert got["comparison"] == c
