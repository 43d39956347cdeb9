"""The flux (BFL HTTP API) and gemini (google-genai SDK) clients against fake
servers on 127.0.0.1, for success and every failure mode the providers document.
"""

import io

import pytest
from PIL import Image as PILImage

from annotation.models import Image
from core.exceptions import InvalidInput
from generation import services
from generation.backends import (
    ConfigurationError,
    GenerationRequest,
    ModerationRefused,
    PermanentError,
    TransientError,
    backend_get,
)
from generation.models import GenerationJob

from . import fakes
from .fakes import API_KEY, FakeBFL, FakeGemini, running


@pytest.fixture
def bfl(monkeypatch):
    with running(FakeBFL()) as server:
        monkeypatch.setenv("BFL_API_KEY", API_KEY)
        monkeypatch.setenv("BFL_API_BASE_URL", server.base_url)
        yield server


@pytest.fixture
def gemini(monkeypatch):
    with running(FakeGemini()) as server:
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        monkeypatch.setenv("GEMINI_API_BASE_URL", server.base_url)
        yield server


FLUX_PARAMS = {"poll_interval": 0.01, "request_timeout": 1.0}
GEMINI_PARAMS = {"timeout": 1.0}


def flux_generate(prompt="a red fox", seed=5, params=None):
    request = GenerationRequest(
        prompt=prompt,
        seed=seed,
        model="flux-2-pro",
        params={**FLUX_PARAMS, **(params or {})},
    )
    return backend_get("flux").generate([request])[0]


def gemini_generate(
    prompt="a red fox", seed=5, negative="", model="gemini-3.1-flash-image"
):
    request = GenerationRequest(
        prompt=prompt,
        seed=seed,
        model=model,
        params=GEMINI_PARAMS,
        negative_prompt=negative,
    )
    return backend_get("gemini").generate([request])[0]


def _is_png(data):
    return PILImage.open(io.BytesIO(data)).format == "PNG"


# --- FLUX ---


def test_flux_submits_polls_and_downloads(bfl):
    result = flux_generate(params={"width": 512, "height": 512})
    assert _is_png(result.data)
    submit, *polls, sample, download = bfl.requests
    assert submit["method"] == "POST" and submit["path"] == "/v1/flux-2-pro"
    assert submit["headers"]["x-key"] == API_KEY
    assert submit["json"] == {
        "prompt": "a red fox",
        "seed": 5,
        "output_format": "png",
        "width": 512,
        "height": 512,
    }
    assert [p["path"] for p in polls] == ["/v1/get_result?id=task-1"] * 2
    assert all(p["headers"]["x-key"] == API_KEY for p in polls)
    # The signed sample URL redirects to the blob; neither gets the API key.
    assert sample["path"] == "/samples/task-1.png"
    assert download["path"] == "/delivery/task-1.png?sig=abc"
    assert "x-key" not in sample["headers"] and "x-key" not in download["headers"]
    assert bfl.submissions == 1
    prov = result.provenance
    assert prov["flux"]["request_id"] == "task-1" and prov["cost"]["amount"] == 3.0
    assert prov["flux"]["result"]["seed"] == 5


@pytest.mark.parametrize(
    "mode,error,message",
    [
        ("rate_limited", TransientError, "FLUX HTTP 429: You have exceeded"),
        ("server_error", TransientError, "FLUX HTTP 503"),
        ("poll_server_error", TransientError, "FLUX HTTP 500"),
        ("timeout", TransientError, "timed out"),
        ("poll_timeout", TransientError, "timed out"),
        ("task_error", TransientError, r"status Error\): GPU worker crashed"),
        ("task_lost", TransientError, "not found right after submitting"),
        ("bad_request", PermanentError, "FLUX HTTP 422: "),
        ("request_moderated", ModerationRefused, "Request Moderated"),
        ("content_moderated", ModerationRefused, "Content Moderated"),
        ("malformed_submit", PermanentError, "Malformed FLUX submit response"),
        ("malformed_poll", PermanentError, "Malformed FLUX poll response"),
        ("not_an_image", PermanentError, "not an image"),
    ],
)
def test_flux_failure_modes_are_classified(bfl, mode, error, message):
    bfl.mode = mode
    bfl.delay = 2.0
    with pytest.raises(error, match=message) as exc:
        flux_generate()
    if error is TransientError:
        assert not isinstance(exc.value, PermanentError)
    if mode == "rate_limited":
        # BFL sends no Retry-After: the worker's own backoff decides.
        assert exc.value.retry_after is None
    if mode in ("request_moderated", "content_moderated"):
        assert "Derivative Works Filter" in exc.value.message


def test_flux_wrong_key_is_permanent(bfl, monkeypatch):
    monkeypatch.setenv("BFL_API_KEY", "wrong")
    with pytest.raises(PermanentError, match="403"):
        flux_generate()


def test_flux_gives_up_polling_after_poll_timeout(bfl):
    bfl.pending_polls = 10_000
    with pytest.raises(TransientError, match="still 'Pending'"):
        flux_generate(params={"poll_timeout": 0.05})


# --- Gemini ---


def test_gemini_generate_content_returns_the_inline_image(gemini):
    result = gemini_generate(negative="text, watermark")
    assert _is_png(result.data)
    [request] = gemini.requests
    assert request["path"].endswith("/models/gemini-3.1-flash-image:generateContent")
    assert request["headers"]["x-goog-api-key"] == API_KEY
    body = request["json"]
    assert body["contents"][0]["parts"][0]["text"] == (
        "a red fox\n\nAvoid: text, watermark"
    )
    assert body["generationConfig"]["responseModalities"] == ["IMAGE"]
    assert body["generationConfig"]["seed"] == 5
    prov = result.provenance["gemini"]
    assert prov["response_id"] == "resp-abc" and prov["usage"]["total_token_count"]


@pytest.mark.parametrize(
    "mode,error,message",
    [
        (
            "rate_limited",
            TransientError,
            "Gemini HTTP 429: You exceeded your current quota",
        ),
        ("server_error", TransientError, "Gemini HTTP 503: The model is overloaded"),
        ("timeout", TransientError, "timed out"),
        ("bad_request", PermanentError, "Gemini HTTP 400: Unsupported aspect ratio"),
        ("prompt_blocked", ModerationRefused, "blocked the prompt: SAFETY"),
        ("image_safety", ModerationRefused, "IMAGE_SAFETY"),
        ("text_only", PermanentError, "I can't create images of that"),
        ("malformed", PermanentError, "Malformed Gemini response"),
        ("not_an_image", PermanentError, "not an image"),
    ],
)
def test_gemini_failure_modes_are_classified(gemini, mode, error, message):
    gemini.mode = mode
    gemini.delay = 2.0
    with pytest.raises(error, match=message) as exc:
        gemini_generate()
    if error is TransientError:
        assert not isinstance(exc.value, PermanentError)
    if mode == "rate_limited":
        # From the body's google.rpc.RetryInfo (the fake sends no header).
        assert exc.value.retry_after == 7.0


def test_gemini_wrong_key_is_permanent(gemini, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "wrong")
    with pytest.raises(PermanentError, match="API key not valid"):
        gemini_generate()


# --- through the worker path ---


@pytest.fixture
def fast_retries(settings):
    settings.GENERATION_RETRY_BASE_SECONDS = 0.01


@pytest.mark.django_db
@pytest.mark.parametrize(
    "backend,params", [("flux", FLUX_PARAMS), ("gemini", GEMINI_PARAMS)]
)
def test_rate_limit_then_success_stores_one_image(
    study, bfl, gemini, fast_retries, backend, params
):
    server = bfl if backend == "flux" else gemini
    server.mode, server.fail_times = "rate_limited", 1
    gemini.retry_delay = "0.05s"
    prompt = services.prompt_create(study=study, text="a quiet harbour at dawn")
    job = services.job_create(
        prompt=prompt, backend=backend, n_seeds=1, params=params, enqueue=False
    )
    item = job.items.get()
    with pytest.raises(services.RetryLater) as exc:
        services.item_run(item_id=item.pk)
    if backend == "gemini":
        assert exc.value.countdown >= 0.05  # RetryInfo.retryDelay is a floor
    item.refresh_from_db()
    assert (item.status, item.attempts) == ("queued", 1)
    assert "429" in item.error
    assert services.item_run(item_id=item.pk) == "done"
    image = Image.objects.get(study=study)
    assert image.provenance["backend"] == backend
    assert image.provenance[backend]  # provider details kept
    job.refresh_from_db()
    assert (job.status, job.n_done) == ("done", 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "backend,mode,message",
    [
        ("flux", "content_moderated", "FLUX refused: Content Moderated"),
        ("flux", "malformed_poll", "Malformed FLUX poll response"),
        ("gemini", "prompt_blocked", "Gemini blocked the prompt: SAFETY"),
        ("gemini", "bad_request", "Gemini HTTP 400"),
    ],
)
def test_permanent_provider_errors_fail_only_that_item(
    study, bfl, gemini, backend, mode, message
):
    server = bfl if backend == "flux" else gemini
    server.mode, server.fail_times = mode, 1
    params = FLUX_PARAMS if backend == "flux" else GEMINI_PARAMS
    prompt = services.prompt_create(study=study, text="a portrait in the rain")
    job = services.job_create(
        prompt=prompt, backend=backend, n_seeds=3, params=params, enqueue=False
    )
    job = services.job_run_inline(job=job)
    assert (job.status, job.n_done, job.n_failed) == ("done", 2, 1)
    failed = job.items.get(status="failed")
    assert message in failed.error
    assert message in job.error
    assert Image.objects.filter(study=study).count() == 2


# --- FLUX: one paid task per item ---


def _flux_job(study, *, n_seeds=1, params=None):
    prompt = services.prompt_create(study=study, text="a lighthouse in fog")
    return services.job_create(
        prompt=prompt,
        backend="flux",
        n_seeds=n_seeds,
        params={**FLUX_PARAMS, **(params or {})},
        enqueue=False,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["poll_server_error", "poll_timeout", "deadline"])
def test_a_poll_failure_resumes_the_same_task(study, bfl, fast_retries, mode):
    if mode == "deadline":  # still Pending when the item's poll_timeout runs out
        bfl.pending_polls = 10**6
        job = _flux_job(study, params={"poll_timeout": 0.05})
    else:
        bfl.mode, bfl.fail_times, bfl.delay = mode, 1, 2.0
        job = _flux_job(study)
    item = job.items.get()
    with pytest.raises(services.RetryLater):
        services.item_run(item_id=item.pk)
    item.refresh_from_db()
    assert (item.status, item.attempts) == ("queued", 1)
    assert item.task_id == "task-1"
    assert item.polling_url == f"{bfl.base_url}/v1/get_result?id=task-1"
    bfl.pending_polls = 0
    assert services.item_run(item_id=item.pk) == "done"
    assert bfl.submissions == 1  # resumed, not paid for twice
    image = Image.objects.get(study=study)
    assert image.provenance["flux"]["request_id"] == "task-1"
    assert image.provenance["flux"]["resumed"] is True


@pytest.mark.django_db
def test_every_item_of_a_job_pays_for_exactly_one_task(study, bfl, fast_retries):
    bfl.mode, bfl.fail_times = "poll_server_error", 4
    job = services.job_run_inline(job=_flux_job(study, n_seeds=3))
    assert (job.status, job.n_done) == ("done", 3)
    assert bfl.submissions == 3
    submitted = [r["json"]["seed"] for r in bfl.requests if r["method"] == "POST"]
    assert sorted(submitted) == [0, 1, 2]


@pytest.mark.django_db
def test_a_task_known_gone_is_submitted_again(study, bfl, fast_retries):
    bfl.mode, bfl.fail_times = "poll_server_error", 1
    item = _flux_job(study).items.get()
    with pytest.raises(services.RetryLater):
        services.item_run(item_id=item.pk)
    bfl.tasks.pop("task-1")  # expired on BFL's side: "Task not found"
    assert services.item_run(item_id=item.pk) == "done"
    assert bfl.submissions == 2
    item.refresh_from_db()
    assert item.task_id == "task-2"


@pytest.mark.django_db
def test_the_error_status_message_reaches_the_item(
    study, bfl, fast_retries, monkeypatch
):
    bfl.mode, bfl.error_message = "task_error", "CUDA error: an illegal memory access"
    monkeypatch.setenv("GENERATION_FLUX_MAX_ATTEMPTS", "2")
    item = _flux_job(study).items.get()
    with pytest.raises(services.RetryLater):
        services.item_run(item_id=item.pk)
    item.refresh_from_db()
    assert "status Error): CUDA error: an illegal memory access" in item.error
    assert item.task_id == ""  # that task is over; the retry pays for a new one
    assert services.item_run(item_id=item.pk) == "failed"
    item.refresh_from_db()
    assert item.error.startswith("Gave up after 2 attempts: FLUX task failed")
    assert "CUDA error: an illegal memory access" in item.job.error
    assert bfl.submissions == 2


@pytest.mark.django_db
def test_an_expired_sample_url_means_a_new_task(study, bfl, fast_retries):
    bfl.sample_ttl = -1.0  # the signed URL is already past its 10 minutes
    item = _flux_job(study).items.get()
    with pytest.raises(services.RetryLater) as exc:
        services.item_run(item_id=item.pk)
    assert "sample URL no longer valid" in exc.value.reason
    item.refresh_from_db()
    assert item.task_id == ""
    bfl.sample_ttl = 600.0
    assert services.item_run(item_id=item.pk) == "done"
    assert bfl.submissions == 2


# --- FLUX: parameters checked per model at job creation ---


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model,params,message",
    [
        ("flux-2-pro", {"width": 1000}, "multiple of 16"),
        ("flux-2-pro", {"width": 2064, "height": 2064}, "at most 4 megapixels"),
        ("flux-2-klein-4b", {"height": 48}, "at least 64"),
        ("flux-dev", {"width": 1000}, "multiple of 32"),
        ("flux-pro-1.1", {"width": 1472}, "between 256 and 1440"),
        ("flux-2-pro", {"steps": 30}, "does not take 'steps'"),
        ("flux-pro-1.1", {"guidance": 3.0}, "does not take 'guidance'"),
        ("flux-2-flex", {"guidance": 12.0}, "between 1.5 and 10.0"),
        ("flux-dev", {"steps": 60}, "between 1 and 50"),
        ("flux-2-pro", {"safety_tolerance": 6}, "between 0 and 5"),
        ("flux-pro-1.1-ultra", {"width": 1024}, "takes aspect_ratio"),
        ("flux-kontext-pro", {"aspect_ratio": "32:9"}, "between 21:9 and 9:21"),
        ("flux-kontext-max", {"aspect_ratio": "wide"}, "look like '16:9'"),
        ("flux-2-pro", {"aspect_ratio": "16:9"}, "not aspect_ratio"),
        ("flux-2-pro", {"raw": True}, "does not take 'raw'"),
        ("flux-2-pro", {"prompt_upsampling": "yes"}, "wrong type"),
    ],
)
def test_flux_jobs_the_api_would_refuse_are_refused_at_creation(
    study, bfl, model, params, message
):
    prompt = services.prompt_create(study=study, text="a kite")
    with pytest.raises(InvalidInput, match=message):
        services.job_create(prompt=prompt, backend="flux", model=model, params=params)
    assert not GenerationJob.objects.exists()


@pytest.mark.parametrize(
    "model,params",
    [
        ("flux-2-pro", {"width": 2048, "height": 2048, "safety_tolerance": 5}),
        ("flux-2-flex", {"steps": 30, "guidance": 4.5, "width": 1440}),
        ("flux-dev", {"width": 1440, "height": 256, "safety_tolerance": 6}),
        ("flux-pro-1.1-ultra", {"aspect_ratio": "21:9", "raw": True}),
        ("flux-kontext-pro", {"aspect_ratio": "9:21", "prompt_upsampling": True}),
    ],
)
def test_flux_jobs_within_the_documented_limits_pass(bfl, model, params):
    backend_get("flux").validate(model=model, params=params)


def test_the_fake_refuses_what_bfl_refuses(bfl):
    # Past our own check: the fake answers 422 as BFL's validation does.
    with pytest.raises(PermanentError, match="FLUX HTTP 422: .*multiple of 16"):
        flux_generate(params={"width": 1000})
    assert bfl.submissions == 0


# --- Gemini: today's models, drafts, quotas ---


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model,message",
    [
        (
            "gemini-2.5-flash-image",
            "was shut down on 2026-10-02; use 'gemini-3.1-flash-image'",
        ),
        (
            "gemini-3-pro-image-preview",
            "was shut down on 2026-06-25; use 'gemini-3-pro-image'",
        ),
        ("gemini-2.5-pro", "Unknown Gemini image model"),
    ],
)
def test_retired_gemini_models_are_refused_at_job_creation(
    study, gemini, model, message
):
    prompt = services.prompt_create(study=study, text="a kite")
    with pytest.raises(InvalidInput, match=message):
        services.job_create(prompt=prompt, backend="gemini", model=model)
    assert not GenerationJob.objects.exists()


def test_gemini_default_model_is_current(gemini):
    from generation.backends import gemini as gemini_backend

    backend = backend_get("gemini")
    assert backend.default_model in gemini_backend.MODELS
    assert backend.default_model not in gemini_backend.RETIRED


def test_gemini_per_model_image_config(gemini):
    backend = backend_get("gemini")
    backend.validate(model="gemini-3.1-flash-image", params={"aspect_ratio": "1:8"})
    with pytest.raises(ConfigurationError, match="aspect_ratio for gemini-3-pro"):
        backend.validate(model="gemini-3-pro-image", params={"aspect_ratio": "1:8"})
    with pytest.raises(ConfigurationError, match="image_size for gemini-3-pro"):
        backend.validate(model="gemini-3-pro-image", params={"image_size": "512"})


def test_a_404_for_the_model_is_a_clear_permanent_error(gemini, monkeypatch):
    # A model the list allows but the service does not know (any more).
    monkeypatch.setenv("GENERATION_GEMINI_EXTRA_MODELS", "gemini-9-image")
    backend_get("gemini").validate(model="gemini-9-image", params={})
    with pytest.raises(PermanentError) as exc:
        gemini_generate(model="gemini-9-image")
    assert not isinstance(exc.value, TransientError)
    assert exc.value.message.startswith(
        "Gemini has no model 'gemini-9-image' (retired or unknown): Gemini HTTP 404"
    )


def test_gemini_takes_the_final_image_over_the_drafts(gemini):
    gemini.drafts = 2
    result = gemini_generate(prompt="a red fox", seed=5, model="gemini-3-pro-image")
    answer = fakes._ok_body("a red fox", 5, "gemini-3-pro-image", drafts=2)
    images = [
        p for p in answer["candidates"][0]["content"]["parts"] if "inlineData" in p
    ]
    assert [p.get("thought", False) for p in images] == [True, True, False]
    assert result.data == fakes._png("a red fox", 5)
    assert result.data != fakes._draft_png("a red fox", 5)


def test_only_draft_images_is_not_an_image(gemini):
    gemini.mode = "drafts_only"
    with pytest.raises(PermanentError, match=r"no image .*\(2 draft image\(s\) only\)"):
        gemini_generate()


@pytest.mark.django_db
def test_gemini_retry_delay_from_the_body_is_honoured(study, gemini, fast_retries):
    gemini.mode, gemini.fail_times, gemini.retry_delay = "rate_limited", 1, "3.5s"
    prompt = services.prompt_create(study=study, text="a paper boat")
    item = services.job_create(
        prompt=prompt, backend="gemini", params=GEMINI_PARAMS, enqueue=False
    ).items.get()
    with pytest.raises(services.RetryLater) as exc:
        services.item_run(item_id=item.pk)
    # The worker's own backoff is ~0.01 s here: the wait comes from RetryInfo.
    assert 3.5 <= exc.value.countdown <= 3.5 * 1.2
    assert services.item_run(item_id=item.pk) == "done"


@pytest.mark.django_db
def test_a_daily_quota_is_not_retried(study, gemini, fast_retries):
    gemini.mode = "daily_quota"
    prompt = services.prompt_create(study=study, text="a paper boat")
    job = services.job_create(
        prompt=prompt, backend="gemini", n_seeds=2, params=GEMINI_PARAMS, enqueue=False
    )
    job = services.job_run_inline(job=job)
    assert (job.status, job.n_failed) == ("failed", 2)
    assert len(gemini.requests) == 2  # one request per item, no retries
    item = job.items.first()
    assert item.attempts == 0
    assert "daily quota GenerateRequestsPerDayPerProjectPerModel used up" in item.error
