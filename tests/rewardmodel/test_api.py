import pytest
from rest_framework.test import APIClient

from annotation import services as ann
from rewardmodel import inference, services
from rewardmodel.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def trained(rated_study):
    study, annotators = rated_study
    run = services.training_run_create(study=study)
    run = services.training_run_execute(run_id=run.pk)
    assert run.status == "succeeded", run.error
    return study, annotators, run.version


def test_endpoints_are_staff_only(db, annotator):
    client = APIClient()
    client.force_authenticate(annotator.user)
    assert client.get("/api/v1/rewardmodel/versions/").status_code == 403
    assert client.post("/api/v1/rewardmodel/trainings/", {}).status_code == 403
    assert APIClient().get("/api/v1/rewardmodel/versions/").status_code in (401, 403)


def test_start_and_poll_a_training(
    staff_client, rated_study, django_capture_on_commit_callbacks
):
    study, _ = rated_study
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = staff_client.post(
            "/api/v1/rewardmodel/trainings/",
            {"study": study.pk, "config": {"seed": 3}},
            format="json",
        )
    assert r.status_code == 201, r.json()
    assert r.json()["status"] == "queued" and len(callbacks) == 1
    again = staff_client.post("/api/v1/rewardmodel/trainings/", {}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    # What the worker does with the enqueued id:
    services.training_run_execute(run_id=r.json()["id"])
    poll = staff_client.get(f"/api/v1/rewardmodel/trainings/{r.json()['id']}/")
    assert poll.status_code == 200
    body = poll.json()
    assert body["status"] == "succeeded" and body["progress"] == 1.0
    assert body["version"] is not None
    assert TrainingRun.objects.get(pk=body["id"]).trigger == "api"


def test_versions_annotators_and_predict(staff_client, trained):
    study, annotators, version = trained
    versions = staff_client.get("/api/v1/rewardmodel/versions/").json()
    assert versions["results"][0]["id"] == version.pk
    assert versions["results"][0]["weights_loaded"] is False
    assert versions["results"][0]["backbone_warning"]
    rows = staff_client.get(
        f"/api/v1/rewardmodel/versions/{version.pk}/annotators/?split=seen"
    ).json()
    # (Which ratings land in test_seen depends on the hashed ids, so the count
    # varies between runs of this small fixture; it can be 0.)
    assert len(rows["results"]) == version.metrics["seen"]["n_annotators"]
    every = staff_client.get(
        f"/api/v1/rewardmodel/versions/{version.pk}/annotators/"
    ).json()
    assert every["count"] == version.annotator_metrics.count()
    for row in every["results"]:
        assert {"population", "per_annotator_ridge", "loo_consensus"} == set(
            row["baselines"]
        )

    image_ids = list(study.images.values_list("pk", flat=True)[:6])
    seen = annotators[0]  # the deployed version is refit on everyone
    r = staff_client.post(
        "/api/v1/rewardmodel/predict/",
        {"annotator": seen.pk, "images": image_ids},
        format="json",
    )
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["how"] == "trained" and body["version"] == version.pk
    assert body["pending"] == []
    assert sorted(body["ranking"]) == sorted(image_ids)
    scores = body["scores"]
    assert [int(i) for i in sorted(scores, key=lambda i: -scores[i])] == body["ranking"]
    assert (
        staff_client.post(
            "/api/v1/rewardmodel/predict/",
            {"annotator": 10**9, "images": image_ids},
            format="json",
        ).status_code
        == 404
    )


def test_predict_cold_start_and_adaptation(trained):
    study, annotators, version = trained
    image_ids = list(study.images.values_list("pk", flat=True))
    newcomer = ann.annotator_create()
    cold = inference.predict(annotator=newcomer, image_ids=image_ids)
    assert cold["how"] == "cold start"
    # Cold start ranks like the population component: same order for everyone new.
    other = inference.predict(annotator=ann.annotator_create(), image_ids=image_ids)
    order = sorted(cold["scores"], key=cold["scores"].get)
    assert order == sorted(other["scores"], key=other["scores"].get)
    # Someone who rated after training is adapted from their ratings, no
    # retraining.
    from tests.factories import png_bytes

    from .conftest import rate_study

    for i in range(6):
        ann.image_create(study=study, data=png_bytes(88_000 + i), filename=f"{i}.png")
    unseen = ann.annotator_create()
    assert rate_study(study, [unseen]) >= 5
    from rewardmodel.embeddings import embeddings_compute

    embeddings_compute(backbone=version.backbone)
    image_ids = list(study.images.values_list("pk", flat=True))
    adapted = inference.predict(annotator=unseen, image_ids=image_ids)
    assert adapted["how"].startswith("adapted from")
    ranked = inference.rank(annotator=unseen, image_ids=image_ids)
    assert [i for i, _ in ranked] == sorted(
        image_ids, key=lambda i: -adapted["scores"][i]
    )
    # Loaded once per process, keyed by version id.
    assert inference.load(version) is inference.load(version)


def test_predict_queues_images_without_embeddings_and_answers_202(
    staff_client, trained, django_capture_on_commit_callbacks
):
    study, annotators, version = trained
    from rewardmodel import tasks
    from tests.factories import png_bytes

    old = list(study.images.values_list("pk", flat=True)[:3])
    fresh = ann.image_create(study=study, data=png_bytes(99_123), filename="new.png")
    body = {"annotator": annotators[0].pk, "images": [*old, fresh.pk]}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        r = staff_client.post("/api/v1/rewardmodel/predict/", body, format="json")
    assert r.status_code == 202, r.json()
    got = r.json()
    assert got["pending"] == [fresh.pk] and r["Retry-After"] == "10"
    assert sorted(int(i) for i in got["scores"]) == sorted(old)
    assert "embedded" in got["detail"] and len(callbacks) == 1
    # What the worker does with the queued task; then the same request is whole.
    assert tasks.embed_images([fresh.pk], version.backbone) == 1
    r = staff_client.post("/api/v1/rewardmodel/predict/", body, format="json")
    assert r.status_code == 200 and len(r.json()["scores"]) == 4
