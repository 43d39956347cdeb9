"""The flux (BFL HTTP API) and gemini (google-genai SDK) clients against fake
servers on 127.0.0.1, for success and every failure mode the providers document.
"""

import io

import pytest
from PIL import Image as PILImage

from annotation.models import Image
from generation import services
from generation.backends import (
    GenerationRequest,
    ModerationRefused,
    PermanentError,
    TransientError,
    backend_get,
)

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


def gemini_generate(prompt="a red fox", seed=5, negative=""):
    request = GenerationRequest(
        prompt=prompt,
        seed=seed,
        model="gemini-2.5-flash-image",
        params=GEMINI_PARAMS,
        negative_prompt=negative,
    )
    return backend_get("gemini").generate([request])[0]


def _is_png(data):
    return PILImage.open(io.BytesIO(data)).format == "PNG"


# --- FLUX -----------------------------------------------------------------------


def test_flux_submits_polls_and_downloads(bfl):
    result = flux_generate(params={"width": 512, "height": 512})
    assert _is_png(result.data)
    submit, *polls, download = bfl.requests
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
    # The signed sample URL never gets the API key.
    assert download["path"] == "/samples/task-1.png"
    assert "x-key" not in download["headers"]
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
        ("task_error", TransientError, "GPU worker crashed"),
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
        assert exc.value.retry_after == 7.0
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


# --- Gemini -----------------------------------------------------------------------


def test_gemini_generate_content_returns_the_inline_image(gemini):
    result = gemini_generate(negative="text, watermark")
    assert _is_png(result.data)
    [request] = gemini.requests
    assert request["path"].endswith("/models/gemini-2.5-flash-image:generateContent")
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
            "Gemini HTTP 429: Resource has been exhausted",
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
        assert exc.value.retry_after == 7.0


def test_gemini_wrong_key_is_permanent(gemini, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "wrong")
    with pytest.raises(PermanentError, match="API key not valid"):
        gemini_generate()


# --- through the worker path -------------------------------------------------------


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
    server.mode, server.fail_times, server.retry_after = "rate_limited", 1, "0.05"
    prompt = services.prompt_create(study=study, text="a quiet harbour at dawn")
    job = services.job_create(
        prompt=prompt, backend=backend, n_seeds=1, params=params, enqueue=False
    )
    item = job.items.get()
    with pytest.raises(services.RetryLater) as exc:
        services.item_run(item_id=item.pk)
    assert exc.value.countdown >= 0.05
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
