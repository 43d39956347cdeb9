"""Black Forest Labs FLUX API (https://docs.bfl.ai): submit, then poll.

Protocol (from BFL's API reference and integration guidelines):

* ``POST {base}/v1/{model}`` with header ``x-key`` and a JSON body answers
  ``{"id", "polling_url", "cost", "input_mp", "output_mp"}``. Each accepted
  submit is a paid task that holds one of the account's concurrent slots until
  it finishes.
* ``GET polling_url`` (with ``x-key``) answers ``{"id", "status", "result",
  "progress", "details"}``: ``Pending`` → keep polling; ``Ready`` →
  ``result.sample`` is a signed URL, valid for 10 minutes, to download without the
  key (it may redirect); ``Request Moderated`` / ``Content Moderated``
  → refused; ``Task not found`` → gone; ``Error`` → failed on their side (the
  message is in ``details``).
* HTTP 429 (too many active tasks), 500, 502, 503, 504 and 408 are transient;
  400, 402, 403, 404 and 422 are permanent.

No double payment: the task id and ``polling_url`` are recorded on the item as
soon as the submit answers (``GenerationRequest.task_store``). A later attempt
after a 5xx, a timeout or the poll deadline resumes polling that task; a new
task is submitted only when the old one is known to be gone (``Task not found``,
``Error``, moderated, or its sample URL expired).

Parameters are checked per model at job creation (``MODELS``), so a job BFL
would answer with 422 is refused before anything is queued.

The key goes only where it belongs (``urls``): a ``polling_url`` is polled only
when it is on the configured API host or a BFL regional host under the same
domain (``api.eu.bfl.ai`` for ``api.bfl.ai``), over the configured scheme
(HTTPS in production); anything else is refused, unpolled. Samples are
downloaded without the key, following at most ``MAX_REDIRECTS`` redirects (never
from HTTPS down to HTTP), streamed and refused past ``PALATE_MAX_UPLOAD_BYTES``.

The API key comes from ``BFL_API_KEY``; ``BFL_API_BASE_URL`` (default
``https://api.bfl.ai``) lets tests point the client at a fake server.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from .base import (
    Backend,
    ConfigurationError,
    GeneratedImage,
    GenerationRequest,
    ModerationRefused,
    PermanentError,
    ProviderTask,
    TransientError,
)
from .http import check_image, parse_retry_after, short
from .urls import download_capped, key_allowed

TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
MODERATED = {"Request Moderated", "Content Moderated"}
FOUR_MP = 2048 * 2048


@dataclass(frozen=True)
class FluxModel:
    """What one endpoint takes, from its page in BFL's API reference.

    ``sizing``: "flux2" (width/height multiples of 16, at least 64, at most 4 MP),
    "step32" (256-1440 in steps of 32) or "aspect" (``aspect_ratio`` between 21:9
    and 9:21, no width/height)."""

    sizing: str
    safety_max: int
    steps: tuple[int, int] | None = None
    guidance: tuple[float, float] | None = None
    raw: bool = False


# The one list of FLUX endpoints (checked 2026-11-27); docs/generation.md shows it.
MODELS_CHECKED = "2026-11-27"
MODELS: dict[str, FluxModel] = {
    "flux-2-max": FluxModel("flux2", 5),
    "flux-2-pro": FluxModel("flux2", 5),
    "flux-2-flex": FluxModel("flux2", 5, steps=(1, 50), guidance=(1.5, 10.0)),
    "flux-2-klein-4b": FluxModel("flux2", 5),
    "flux-2-klein-9b": FluxModel("flux2", 5),
    "flux-kontext-max": FluxModel("aspect", 6),
    "flux-kontext-pro": FluxModel("aspect", 6),
    "flux-pro-1.1-ultra": FluxModel("aspect", 6, raw=True),
    "flux-pro-1.1": FluxModel("step32", 6),
    "flux-pro": FluxModel("step32", 6, steps=(1, 50), guidance=(1.5, 5.0)),
    "flux-dev": FluxModel("step32", 6, steps=(1, 50), guidance=(1.5, 5.0)),
}
# Sent to BFL when the job sets them (the rest of the params steer the client).
BODY_PARAMS = (
    "width",
    "height",
    "aspect_ratio",
    "safety_tolerance",
    "prompt_upsampling",
    "steps",
    "guidance",
    "raw",
)


def _api_key() -> str:
    return os.environ.get("BFL_API_KEY", "").strip()


def _base_url() -> str:
    url = os.environ.get("BFL_API_BASE_URL") or getattr(
        settings, "GENERATION_FLUX_BASE_URL", "https://api.bfl.ai"
    )
    return url.rstrip("/")


class _TaskGone(Exception):
    """The task we polled no longer exists on BFL's side."""


class FluxBackend(Backend):
    name = "flux"
    default_model = "flux-2-pro"
    models = tuple(MODELS)
    rate_limit = "120/m"
    concurrency = 6  # BFL allows 24 active tasks per account (Kontext Max: 6)
    soft_time_limit = 300
    time_limit = 330
    allowed_params = {
        "width": int,
        "height": int,
        "aspect_ratio": str,
        "safety_tolerance": int,
        "output_format": str,
        "prompt_upsampling": bool,
        "raw": bool,
        "steps": int,
        "guidance": (int, float),
        "poll_interval": (int, float),
        "poll_timeout": (int, float),
        "request_timeout": (int, float),
    }

    def validate(self, *, model: str, params: dict[str, Any]) -> None:
        super().validate(model=model, params=params)
        spec = MODELS.get(model)
        if spec is None:
            raise ConfigurationError(
                f"Unknown model '{model}' for backend 'flux' "
                f"(available: {', '.join(self.models)})."
            )
        if not _api_key():
            raise ConfigurationError(
                "The flux backend needs an API key: set BFL_API_KEY in the "
                "environment of the web process and the workers."
            )
        _validate_size(model, spec, params)
        _validate_knobs(model, spec, params)
        if params.get("output_format", "png") not in ("png", "jpeg"):
            raise ConfigurationError("output_format must be 'png' or 'jpeg'.")

    def generate(self, requests: list[GenerationRequest]) -> list[GeneratedImage]:
        return [self._one(req) for req in requests]

    # -- one request -----------------------------------------------------------

    def _one(self, req: GenerationRequest) -> GeneratedImage:
        import httpx

        key = _api_key()
        if not key:
            raise PermanentError("BFL_API_KEY is not set on this worker.")
        timeout = float(req.param("request_timeout", 30.0))
        headers = {"x-key": key, "accept": "application/json"}
        started = time.monotonic()
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            task, submit = req.task, None
            if task is None:
                task, submit = self._submit(client, headers, req)
            try:
                result = self._poll(client, task, headers, req)
            except _TaskGone:
                if submit is not None:  # our own fresh task vanished: try later
                    _forget(req)
                    raise TransientError(
                        f"FLUX: task {task.id} not found right after submitting."
                    ) from None
                # The resumed task expired or is unknown: now, and only now, pay
                # for a new one.
                _forget(req)
                task, submit = self._submit(client, headers, req)
                result = self._poll(client, task, headers, req)
            data = self._download(client, result, req)
        check_image(data, what="Malformed FLUX result: the sample")
        return GeneratedImage(
            data=data, provenance=_provenance(task, submit, result, started)
        )

    def _submit(self, client, headers: dict, req: GenerationRequest):
        body: dict[str, Any] = {
            "prompt": req.prompt,
            "seed": int(req.seed) % (2**32),
            "output_format": req.param("output_format", "png"),
        }
        for name in BODY_PARAMS:
            if req.params.get(name) is not None:
                body[name] = req.params[name]
        submit = _json(
            _call(
                client,
                "POST",
                f"{_base_url()}/v1/{req.model}",
                headers=headers,
                json=body,
            ),
            "submit",
        )
        task_id = submit.get("id")
        polling_url = submit.get("polling_url") or (
            f"{_base_url()}/v1/get_result?id={task_id}" if task_id else None
        )
        if not isinstance(polling_url, str) or not polling_url:
            raise PermanentError(
                f"Malformed FLUX response: no id or polling_url in {short(submit)}."
            )
        task = ProviderTask(id=str(task_id or ""), polling_url=polling_url)
        if req.task_store is not None:
            req.task_store(task)  # recorded before the first poll can fail
        return task, submit

    def _poll(
        self, client, task: ProviderTask, headers: dict, req: GenerationRequest
    ) -> dict:
        interval = float(req.param("poll_interval", 1.0))
        deadline = time.monotonic() + float(req.param("poll_timeout", 240.0))
        if not key_allowed(task.polling_url, _base_url()):
            _forget(req)
            raise PermanentError(
                f"FLUX answered a polling_url outside its API "
                f"({short(task.polling_url, 200)}); the API key is only sent to "
                f"{_base_url()} and its regional hosts, so it was not polled."
            )
        while True:
            payload = _json(
                _call(client, "GET", task.polling_url, headers=headers), "poll"
            )
            status = payload.get("status")
            if status == "Ready":
                return payload.get("result") or {}
            if status == "Task not found":
                raise _TaskGone()
            if status in MODERATED or status == "Error":
                _forget(req)  # finished for good: a retry submits a new task
                raise _terminal_error(status, payload)
            if not isinstance(status, str):
                raise PermanentError(
                    f"Malformed FLUX poll response (no status): {short(payload)}."
                )
            if time.monotonic() > deadline:
                # The task keeps running and stays recorded: the retry resumes it.
                raise TransientError(
                    f"FLUX task {task.id} still '{status}' after "
                    f"{req.param('poll_timeout', 240)}s (will resume polling)."
                )
            time.sleep(interval)

    def _download(self, client, result: dict, req: GenerationRequest) -> bytes:
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str) or not sample.startswith(
            ("http://", "https://")
        ):
            raise PermanentError(
                f"Malformed FLUX result: no sample URL in {short(result)}."
            )
        try:
            # A signed delivery URL: no key, and it may redirect to the blob.
            return download_capped(
                client,
                sample,
                base_url=_base_url(),
                max_bytes=settings.PALATE_MAX_UPLOAD_BYTES,
                check=_check_status,
            )
        except PermanentError as exc:
            if exc.provider_status in (403, 404, 410):
                # Signed URLs live 10 minutes; the result is gone with it.
                _forget(req)
                raise TransientError(
                    f"FLUX sample URL no longer valid ({exc.message}); the image "
                    "will be generated again."
                ) from exc
            raise


def _validate_size(model: str, spec: FluxModel, params: dict[str, Any]) -> None:
    width, height = params.get("width"), params.get("height")
    if spec.sizing == "aspect":
        if width is not None or height is not None:
            raise ConfigurationError(
                f"{model} takes aspect_ratio (e.g. '16:9'), not width/height."
            )
        if "aspect_ratio" in params:
            _validate_aspect_ratio(params["aspect_ratio"])
        return
    if "aspect_ratio" in params:
        raise ConfigurationError(f"{model} takes width/height, not aspect_ratio.")
    for key, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if spec.sizing == "flux2" and (value < 64 or value % 16):
            raise ConfigurationError(
                f"{key} for {model} must be a multiple of 16, at least 64."
            )
        if spec.sizing == "step32" and (not 256 <= value <= 1440 or value % 32):
            raise ConfigurationError(
                f"{key} for {model} must be between 256 and 1440, a multiple of 32."
            )
    if spec.sizing == "flux2" and (width or 1024) * (height or 1024) > FOUR_MP:
        raise ConfigurationError(
            f"{model} makes at most 4 megapixels (width × height ≤ {FOUR_MP})."
        )


def _validate_aspect_ratio(value: str) -> None:
    try:
        w, h = (int(x) for x in value.split(":"))
    except ValueError:
        raise ConfigurationError(
            "aspect_ratio must look like '16:9' (width:height)."
        ) from None
    if w <= 0 or h <= 0 or not 9 / 21 <= w / h <= 21 / 9:
        raise ConfigurationError("aspect_ratio must be between 21:9 and 9:21.")


def _validate_knobs(model: str, spec: FluxModel, params: dict[str, Any]) -> None:
    tolerance = params.get("safety_tolerance")
    if tolerance is not None and not 0 <= tolerance <= spec.safety_max:
        raise ConfigurationError(
            f"safety_tolerance for {model} must be between 0 and {spec.safety_max}."
        )
    for key, allowed in (("steps", spec.steps), ("guidance", spec.guidance)):
        if params.get(key) is None:
            continue
        if allowed is None:
            raise ConfigurationError(f"{model} does not take '{key}'.")
        low, high = allowed
        if not low <= params[key] <= high:
            raise ConfigurationError(
                f"{key} for {model} must be between {low} and {high}."
            )
    if params.get("raw") is not None and not spec.raw:
        raise ConfigurationError(f"{model} does not take 'raw'.")


def _forget(req: GenerationRequest) -> None:
    if req.task_store is not None:
        req.task_store(None)


def _terminal_error(status: str, payload: dict) -> Exception:
    details = payload.get("details") or payload.get("error") or payload.get("result")
    if status in MODERATED:
        reasons = details
        if isinstance(details, dict):
            reasons = details.get("Moderation Reasons") or details
        return ModerationRefused(
            f"FLUX refused: {status}" + (f" ({short(reasons, 200)})" if reasons else "")
        )
    # BFL's task failed: worth a new task, counted as an attempt, with their words.
    return TransientError(
        "FLUX task failed (status Error)"
        + (f": {short(details, 300)}" if details else ".")
    )


def _provenance(task: ProviderTask, submit: dict | None, result: dict, started):
    provenance: dict[str, Any] = {
        "flux": {
            "request_id": task.id,
            "resumed": submit is None,
            "cost": (submit or {}).get("cost"),
            "input_mp": (submit or {}).get("input_mp"),
            "output_mp": (submit or {}).get("output_mp"),
            "result": {k: v for k, v in result.items() if k != "sample"},
            "latency_s": round(time.monotonic() - started, 3),
        },
    }
    if submit and submit.get("cost") is not None:
        provenance["cost"] = {"amount": submit.get("cost"), "unit": "credits"}
    return provenance


def _call(client, method: str, url: str, **kwargs):
    import httpx

    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientError(f"FLUX request timed out ({type(exc).__name__}).") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"FLUX connection failed: {exc}.") from exc
    _check_status(response)
    return response


def _check_status(response) -> None:
    """Our error for a 4xx/5xx answer (the body must be read, or small)."""
    if response.status_code < 400:
        return
    detail = _error_detail(response)
    if response.status_code in TRANSIENT_HTTP:
        raise TransientError(
            f"FLUX HTTP {response.status_code}: {detail}",
            # BFL documents none, but a proxy in front of it may send one.
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            provider_status=response.status_code,
        )
    raise PermanentError(
        f"FLUX HTTP {response.status_code}: {detail}",
        provider_status=response.status_code,
    )


def _json(response, what: str) -> dict:
    try:
        payload = response.json()
    except ValueError:
        raise PermanentError(
            f"Malformed FLUX {what} response (not JSON): {short(response.text, 200)}"
        ) from None
    if not isinstance(payload, dict):
        raise PermanentError(f"Malformed FLUX {what} response: {short(payload)}")
    return payload


def _error_detail(response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return short(response.text or response.reason_phrase, 300)
    if isinstance(payload, dict):
        detail = payload.get("detail") or payload.get("message") or payload
        return short(detail if isinstance(detail, str) else str(detail), 300)
    return short(str(payload), 300)
