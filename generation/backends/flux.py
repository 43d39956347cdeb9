"""Black Forest Labs FLUX API (https://docs.bfl.ai): submit, then poll.

Protocol (from BFL's API reference):

* ``POST {base}/v1/{model}`` with header ``x-key`` and a JSON body (``prompt``,
  ``seed``, ``width``, ``height``, ``safety_tolerance``, ``output_format``) answers
  ``{"id", "polling_url", "cost", ...}``;
* ``GET polling_url`` (with ``x-key``) answers ``{"status": ...}``: ``Pending`` →
  keep polling; ``Ready`` → ``result.sample`` is a signed URL to download (no key
  is sent there); ``Request Moderated`` / ``Content Moderated`` → refused;
  ``Task not found`` → gone; ``Error`` → failed on their side.
* HTTP 429 (with ``Retry-After``), 500, 502, 503, 504 and 408 are transient; 400,
  402, 403 and 422 are permanent.

The API key comes from ``BFL_API_KEY``; ``BFL_API_BASE_URL`` (default
``https://api.bfl.ai``) lets tests point the client at a fake server.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.conf import settings

from .base import (
    Backend,
    ConfigurationError,
    GeneratedImage,
    GenerationRequest,
    ModerationRefused,
    PermanentError,
    TransientError,
)
from .http import check_image, parse_retry_after, short

MODELS = (
    "flux-2-max",
    "flux-2-pro",
    "flux-2-pro-preview",
    "flux-2-flex",
    "flux-2-klein-4b",
    "flux-2-klein-9b",
    "flux-2-klein-9b-preview",
    "flux-kontext-max",
    "flux-kontext-pro",
    "flux-pro-1.1-ultra",
    "flux-pro-1.1",
    "flux-pro",
    "flux-dev",
)
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
MODERATED = {"Request Moderated", "Content Moderated"}


def _api_key() -> str:
    return os.environ.get("BFL_API_KEY", "").strip()


def _base_url() -> str:
    url = os.environ.get("BFL_API_BASE_URL") or getattr(
        settings, "GENERATION_FLUX_BASE_URL", "https://api.bfl.ai"
    )
    return url.rstrip("/")


class FluxBackend(Backend):
    name = "flux"
    default_model = "flux-2-pro"
    models = MODELS
    rate_limit = "120/m"
    concurrency = 6  # BFL's default account allows a handful of active tasks
    soft_time_limit = 300
    time_limit = 330
    allowed_params = {
        "width": int,
        "height": int,
        "safety_tolerance": int,
        "output_format": str,
        "prompt_upsampling": bool,
        "steps": int,
        "guidance": (int, float),
        "poll_interval": (int, float),
        "poll_timeout": (int, float),
        "request_timeout": (int, float),
    }

    def validate(self, *, model: str, params: dict[str, Any]) -> None:
        for key in ("prompt_upsampling",):
            if key in params and not isinstance(params[key], bool):
                raise ConfigurationError(f"Parameter '{key}' must be true or false.")
        super().validate(
            model=model,
            params={k: v for k, v in params.items() if k != "prompt_upsampling"},
        )
        if model not in self.models:
            raise ConfigurationError(
                f"Unknown model '{model}' for backend 'flux' "
                f"(available: {', '.join(self.models)})."
            )
        if not _api_key():
            raise ConfigurationError(
                "The flux backend needs an API key: set BFL_API_KEY in the "
                "environment of the web process and the workers."
            )
        for key in ("width", "height"):
            if key in params and not 64 <= params[key] <= 4096:
                raise ConfigurationError(f"{key} must be between 64 and 4096.")
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
        body: dict[str, Any] = {
            "prompt": req.prompt,
            "seed": int(req.seed) % (2**32),
            "output_format": req.param("output_format", "png"),
        }
        for name in (
            "width",
            "height",
            "safety_tolerance",
            "prompt_upsampling",
            "steps",
            "guidance",
        ):
            if req.params.get(name) is not None:
                body[name] = req.params[name]
        headers = {"x-key": key, "accept": "application/json"}
        started = time.monotonic()
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            submit = self._json(
                self._call(
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
            result = self._poll(client, polling_url, headers, req)
            sample = result.get("sample") if isinstance(result, dict) else None
            if not isinstance(sample, str) or not sample.startswith(
                ("http://", "https://")
            ):
                raise PermanentError(
                    f"Malformed FLUX result: no sample URL in {short(result)}."
                )
            data = self._call(client, "GET", sample).content
        check_image(data, what="Malformed FLUX result: the sample")
        provenance = {
            "flux": {
                "request_id": task_id,
                "cost": submit.get("cost"),
                "input_mp": submit.get("input_mp"),
                "output_mp": submit.get("output_mp"),
                "result": {k: v for k, v in result.items() if k != "sample"},
                "latency_s": round(time.monotonic() - started, 3),
            },
        }
        if submit.get("cost") is not None:
            provenance["cost"] = {"amount": submit.get("cost"), "unit": "credits"}
        return GeneratedImage(data=data, provenance=provenance)

    def _poll(self, client, url: str, headers: dict, req: GenerationRequest) -> dict:
        interval = float(req.param("poll_interval", 1.0))
        deadline = time.monotonic() + float(req.param("poll_timeout", 240.0))
        while True:
            payload = self._json(
                self._call(client, "GET", url, headers=headers), "poll"
            )
            status = payload.get("status")
            if status == "Ready":
                return payload.get("result") or {}
            if status in MODERATED:
                details = payload.get("details") or payload.get("result") or ""
                reasons = ""
                if isinstance(details, dict):
                    reasons = details.get("Moderation Reasons") or details
                raise ModerationRefused(
                    f"FLUX refused: {status}"
                    + (f" ({short(reasons, 200)})" if reasons else "")
                )
            if status == "Task not found":
                raise PermanentError("FLUX: task not found (expired or unknown id).")
            if status == "Error":
                detail = payload.get("details") or payload.get("result") or ""
                raise TransientError(
                    "FLUX reported a generation error"
                    + (f": {short(detail, 300)}" if detail else ".")
                )
            if not isinstance(status, str):
                raise PermanentError(
                    f"Malformed FLUX poll response (no status): {short(payload)}."
                )
            if time.monotonic() > deadline:
                raise TransientError(
                    f"FLUX task still '{status}' after "
                    f"{req.param('poll_timeout', 240)}s."
                )
            time.sleep(interval)

    @staticmethod
    def _call(client, method: str, url: str, **kwargs):
        import httpx

        try:
            response = client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"FLUX request timed out ({type(exc).__name__})."
            ) from exc
        except httpx.TransportError as exc:
            raise TransientError(f"FLUX connection failed: {exc}.") from exc
        if response.status_code < 400:
            return response
        detail = _error_detail(response)
        if response.status_code in TRANSIENT_HTTP:
            raise TransientError(
                f"FLUX HTTP {response.status_code}: {detail}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                provider_status=response.status_code,
            )
        raise PermanentError(
            f"FLUX HTTP {response.status_code}: {detail}",
            provider_status=response.status_code,
        )

    @staticmethod
    def _json(response, what: str) -> dict:
        try:
            payload = response.json()
        except ValueError:
            raise PermanentError(
                f"Malformed FLUX {what} response (not JSON): "
                f"{short(response.text, 200)}"
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
