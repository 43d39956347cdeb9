"""Prompts, jobs and the worker path (item_run) with the procedural backend."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import Image
from core.exceptions import Conflict, InvalidInput
from generation import services
from generation.backends import (
    BACKENDS,
    Backend,
    PermanentError,
    TransientError,
    backend_get,
)
from generation.backends import _instances as backend_instances
from generation.models import GenerationItem, GenerationJob, Prompt

pytestmark = pytest.mark.django_db


@pytest.fixture
def prompt(study):
    return services.prompt_create(
        study=study, text="A warm sunset over dunes", domain="art", tags=["sunset"]
    )


# --- prompts ------------------------------------------------------------------


def test_prompt_create_normalises_and_dedups(study):
    a = services.prompt_create(study=study, text="  a  red   fox ", domain=" Art ")
    b = services.prompt_create(study=study, text="a red fox")
    assert a.pk == b.pk and a.text == "a red fox" and a.domain == "art"


@pytest.mark.parametrize("text", ["", "   ", "x" * 2001])
def test_prompt_create_refuses_empty_and_over_long(study, text):
    with pytest.raises(InvalidInput):
        services.prompt_create(study=study, text=text)
    assert not Prompt.objects.exists()


def test_prompt_text_constraints_hold_in_the_database(study):
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.objects.create(study=study, text="")
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.objects.create(study=study, text="y" * 2001)


def test_import_csv_jsonl_and_pasted_lines(study):
    csv_text = (
        'text,domain,tags\na fox in snow,art,winter;animal\n"a dress, red",fashion,\n'
    )
    result = services.prompts_import(study=study, content=csv_text.encode(), fmt="csv")
    assert [p.text for p in result.created] == ["a fox in snow", "a dress, red"]
    assert result.created[0].tags == ["winter", "animal"]
    assert result.created[1].domain == "fashion"

    jsonl = (
        '{"text": "neon alley at night", "domain": "cinematic", '
        '"tags": ["neon"]}\n\n{"text": "a fox in snow"}\n'
    )
    result = services.prompts_import(study=study, content=jsonl, fmt="jsonl")
    assert len(result.created) == 1 and len(result.existing) == 1
    assert result.created[0].tags == ["neon"]

    result = services.prompts_import(
        study=study, content="one\n\ntwo\n", fmt="text", domain="design"
    )
    assert [(p.text, p.domain) for p in result.created] == [
        ("one", "design"),
        ("two", "design"),
    ]


@pytest.mark.parametrize(
    "content,fmt,message",
    [
        ("domain\nart\n", "csv", "'text' column"),
        ('{"text": "ok"}\n{"text": ""}\n', "jsonl", "Line 2: A prompt cannot be empty"),
        ('{"text": "ok"}\nnot json\n', "jsonl", "Line 2: not valid JSON"),
        (
            '{"text": "ok", "tags": "a"}\n{"text": "b", "tags": [1]}\n',
            "jsonl",
            "Line 2: Tags must be a list",
        ),
        ("", "text", "No prompts found"),
        ("a\n", "xml", "Unknown prompt format"),
    ],
)
def test_import_errors_name_the_line_and_write_nothing(study, content, fmt, message):
    with pytest.raises(InvalidInput, match=message):
        services.prompts_import(study=study, content=content, fmt=fmt)
    assert not Prompt.objects.exists()


# --- job validation: clear message, nothing queued ----------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backend": "dalle"}, "Unknown backend 'dalle'"),
        ({"backend": "procedural", "model": "procedural-v9"}, "Unknown model"),
        ({"backend": "procedural", "n_seeds": 0}, "between 1 and 1000"),
        ({"backend": "procedural", "n_seeds": 1001}, "between 1 and 1000"),
        ({"backend": "procedural", "params": {"steps": 3}}, "does not take"),
        ({"backend": "flux"}, "BFL_API_KEY"),
        ({"backend": "gemini"}, "GEMINI_API_KEY"),
        ({"backend": "flux", "model": "flux-9"}, "Unknown model 'flux-9'"),
        (
            {"backend": "gemini", "model": "gemini-2.5-pro"},
            "Unknown Gemini image model",
        ),
        ({"backend": "diffusers", "model": "not a model id"}, "Unknown model"),
        ({"backend": "diffusers", "model": "/nowhere/pipe"}, "model_index.json"),
    ],
)
def test_bad_job_requests_are_refused_before_anything_is_written(
    prompt, monkeypatch, django_capture_on_commit_callbacks, kwargs, message
):
    monkeypatch.delenv("BFL_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    kwargs = {"n_seeds": 2, **kwargs}
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(InvalidInput, match=message):
            services.jobs_create(prompts=[prompt], **kwargs)
    assert callbacks == []
    assert not GenerationJob.objects.exists()
    assert not GenerationItem.objects.exists()


def test_over_long_prompt_from_elsewhere_is_refused(study):
    long_prompt = Prompt(study=study, text="z" * 2500)  # never saved
    with pytest.raises(InvalidInput, match="at most 2000"):
        services.jobs_create(prompts=[long_prompt], backend="procedural")


# --- jobs end to end, inline ---------------------------------------------------


def test_job_produces_rateable_images_with_provenance(study, prompt):
    job = services.job_create(
        prompt=prompt,
        backend="procedural",
        n_seeds=3,
        params={"width": 64, "height": 64},
        enqueue=False,
    )
    assert job.status == "queued" and job.items.count() == 3
    job = services.job_run_inline(job=job)
    assert (job.status, job.n_done, job.n_failed) == ("done", 3, 0)
    assert job.finished_at is not None and job.started_at is not None
    images = Image.objects.filter(study=study).order_by("pk")
    assert images.count() == 3
    for image, item in zip(images, job.items.order_by("seed"), strict=True):
        assert item.image_id == image.pk and item.status == "done"
        assert image.target_ratings == study.raters_per_image == 3
        image.refresh_from_db()
        assert image.open_slots == 3
        assert image.prompt == prompt.text and image.domain == "art"
        prov = image.provenance
        assert prov["backend"] == "procedural" and prov["seed"] == item.seed
        assert prov["model"] == "procedural-v1" and prov["job_id"] == job.pk
        assert prov["params"] == {"width": 64, "height": 64}
        assert set(prov["procedural"]["attributes"]) >= {"warmth", "texture"}
        assert image.width == 64


def test_new_jobs_continue_the_seeds(prompt):
    first = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=2, enqueue=False
    )
    second = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=2, enqueue=False
    )
    assert list(first.items.values_list("seed", flat=True)) == [0, 1]
    assert list(second.items.values_list("seed", flat=True)) == [2, 3]


def test_jobs_are_enqueued_only_after_commit(
    prompt, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.job_create(prompt=prompt, backend="procedural", n_seeds=2)
    assert len(callbacks) == 1


# --- idempotency and redelivery ------------------------------------------------


def test_running_the_same_item_twice_makes_one_image(prompt):
    job = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=1, enqueue=False
    )
    item = job.items.get()
    assert services.item_run(item_id=item.pk) == "done"
    assert services.item_run(item_id=item.pk) == "skipped"
    assert Image.objects.count() == 1
    job.refresh_from_db()
    assert (job.n_done, job.status) == (1, "done")


def test_redelivery_while_claimed_waits_and_expired_claims_are_taken_over(prompt):
    job = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=1, enqueue=False
    )
    item = job.items.get()
    # Another delivery holds a live claim: this one must not run it too.
    GenerationItem.objects.filter(pk=item.pk).update(
        status="running",
        claim_token="other",
        claimed_until=timezone.now() + timezone.timedelta(seconds=60),
    )
    with pytest.raises(services.RetryLater) as exc:
        services.item_run(item_id=item.pk)
    assert 50 < exc.value.countdown <= 62
    assert Image.objects.count() == 0
    # The other worker died: its claim expires and the redelivery takes over.
    GenerationItem.objects.filter(pk=item.pk).update(
        claimed_until=timezone.now() - timezone.timedelta(seconds=1)
    )
    assert services.item_run(item_id=item.pk) == "done"
    assert Image.objects.count() == 1


def test_unique_seed_per_job_is_a_database_rule(prompt):
    job = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=1, enqueue=False
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        GenerationItem.objects.create(job=job, seed=job.items.get().seed)


def test_an_image_belongs_to_one_item_only(prompt):
    job = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=2, enqueue=False
    )
    services.job_run_inline(job=job)
    first, second = job.items.order_by("seed")
    with pytest.raises(IntegrityError), transaction.atomic():
        GenerationItem.objects.filter(pk=second.pk).update(image=first.image)


def test_same_image_twice_fails_that_item_with_a_clear_message(study, prompt):
    first = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=1, enqueue=False
    )
    services.job_run_inline(job=first)
    again = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=1, seed_start=0, enqueue=False
    )
    again = services.job_run_inline(job=again)
    item = again.items.get()
    assert item.status == "failed" and "already in study" in item.error
    assert again.status == "failed" and "1 of 1 images failed" in again.error
    assert Image.objects.filter(study=study).count() == 1


# --- failures, cancel, retry ---------------------------------------------------


class FlakyBackend(Backend):
    """Fails seeds by rule: odd seeds permanently, seed 2 transiently once."""

    name = "flaky"
    default_model = "flaky-1"
    transient_left = 1

    def validate(self, *, model, params):
        pass

    def generate(self, requests):
        from generation.backends.procedural import ProceduralBackend

        for req in requests:
            if req.seed % 2:
                raise PermanentError(f"provider says no to seed {req.seed}")
            if req.seed == 2 and FlakyBackend.transient_left:
                FlakyBackend.transient_left -= 1
                raise TransientError("HTTP 503 overloaded", retry_after=5)
        return ProceduralBackend().generate(requests)


@pytest.fixture
def flaky(monkeypatch, settings):
    monkeypatch.setitem(
        BACKENDS, "flaky", "tests.generation.test_services:FlakyBackend"
    )
    backend_instances.pop("flaky", None)
    FlakyBackend.transient_left = 1
    settings.GENERATION_RETRY_BASE_SECONDS = 0.01
    yield
    backend_instances.pop("flaky", None)


def test_failed_items_keep_the_provider_message_and_do_not_stop_the_rest(flaky, prompt):
    job = services.job_create(prompt=prompt, backend="flaky", n_seeds=4, enqueue=False)
    items = {i.seed: i for i in job.items.all()}
    assert services.item_run(item_id=items[1].pk) == "failed"
    with pytest.raises(services.RetryLater) as exc:
        services.item_run(item_id=items[2].pk)
    assert exc.value.countdown >= 5  # the provider's Retry-After is a floor
    items[2].refresh_from_db()
    assert items[2].status == "queued" and items[2].attempts == 1
    assert "will retry" in items[2].error
    job.refresh_from_db()
    assert job.status == "running" and job.n_failed == 1
    for seed in (0, 2, 3):
        services.item_run(item_id=items[seed].pk)
    job.refresh_from_db()
    assert (job.status, job.n_done, job.n_failed) == ("done", 2, 2)
    assert "provider says no to seed 1" in job.error
    failed = job.items.get(seed=3)
    assert failed.error == "provider says no to seed 3" and failed.image is None


def test_transient_errors_give_up_after_max_attempts(flaky, prompt, settings):
    settings.GENERATION_BACKEND_LIMITS = {"flaky": {"max_attempts": 2}}
    FlakyBackend.transient_left = 5
    job = services.job_create(
        prompt=prompt, backend="flaky", n_seeds=1, seed_start=2, enqueue=False
    )
    item = job.items.get()
    with pytest.raises(services.RetryLater):
        services.item_run(item_id=item.pk)
    assert services.item_run(item_id=item.pk) == "failed"
    item.refresh_from_db()
    assert item.error == "Gave up after 2 attempts: HTTP 503 overloaded"


def test_cancel_stops_queued_items_and_retry_requeues_them(
    prompt, django_capture_on_commit_callbacks
):
    job = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=3, enqueue=False
    )
    first = job.items.order_by("seed").first()
    services.item_run(item_id=first.pk)
    job = services.job_cancel(job=job)
    assert (job.status, job.n_done, job.n_cancelled) == ("cancelled", 1, 2)
    with pytest.raises(Conflict):
        services.job_cancel(job=job)
    # A late delivery of a cancelled item does nothing.
    late = job.items.filter(status="cancelled").first()
    assert services.item_run(item_id=late.pk) == "skipped"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ids = services.job_retry(job=job)
    assert len(ids) == 2 and len(callbacks) == 1
    job.refresh_from_db()
    assert job.status == "running" and job.finished_at is None
    job = services.job_run_inline(job=job)
    assert (job.status, job.n_done, job.n_cancelled) == ("done", 3, 0)
    with pytest.raises(Conflict, match="no failed or cancelled"):
        services.job_retry(job=job)


def test_cancel_while_generating_discards_the_result(prompt, monkeypatch):
    job = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=1, enqueue=False
    )
    item = job.items.get()
    real_generate = backend_get("procedural").generate

    def generate_then_cancelled(requests):
        services.job_cancel(job=job)  # the researcher clicks cancel meanwhile
        return real_generate(requests)

    monkeypatch.setattr(backend_get("procedural"), "generate", generate_then_cancelled)
    assert services.item_run(item_id=item.pk) == "cancelled"
    assert Image.objects.count() == 0


def test_demo_service_fills_the_pool(study):
    jobs = services.demo_images_generate(
        study=study,
        prompts=[
            {"text": "a calm lake", "domain": "art"},
            {"text": "a neon street", "domain": "cinematic", "tags": ["neon"]},
        ],
        per_prompt=2,
    )
    assert [j.status for j in jobs] == ["done", "done"]
    assert Image.objects.filter(study=study, open_slots=3).count() == 4


def test_items_of_a_dead_worker_are_sent_again_once_their_claim_expires(prompt):
    """Issue 24, 3: a worker killed whole leaves its item "running" and its
    message unacknowledged for the broker's visibility timeout (hours); the
    beat task sends the item again once its claim has expired."""
    from config.celery import app
    from generation.tasks import redeliver_abandoned

    job = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=2, enqueue=False
    )
    dead, live = job.items.order_by("seed")
    GenerationItem.objects.filter(pk=dead.pk).update(
        status="running",
        claim_token="dead",
        claimed_until=timezone.now() - timezone.timedelta(seconds=1),
    )
    GenerationItem.objects.filter(pk=live.pk).update(
        status="running",
        claim_token="alive",
        claimed_until=timezone.now() + timezone.timedelta(seconds=60),
    )
    app.conf.task_always_eager = True
    try:
        assert redeliver_abandoned() == 1
    finally:
        app.conf.task_always_eager = False
    dead.refresh_from_db()
    live.refresh_from_db()
    assert dead.status == "done" and Image.objects.count() == 1
    assert live.status == "running" and live.claim_token == "alive"
