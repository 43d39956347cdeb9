"""Gemini image models ("Nano Banana") through the official ``google-genai`` SDK.

``client.models.generate_content`` with ``response_modalities=["IMAGE"]`` posts
to ``{base}/v1beta/models/{model}:generateContent``; the image comes back as an
``inlineData`` part (base64, decoded by the SDK). A blocked prompt has
``promptFeedback.blockReason``; a blocked output has a candidate
``finishReason`` such as ``IMAGE_SAFETY`` or ``PROHIBITED_CONTENT``. Gemini 3
image models may send draft images first (parts with ``thought: true``): the image
kept is the last part that is not a thought.

Errors follow Google's error model (``{"error": {"code", "message", "status",
"details"}}``): a 429 RESOURCE_EXHAUSTED carries its delay in a
``google.rpc.RetryInfo`` detail (``retryDelay``), not in a header, and a
``google.rpc.QuotaFailure`` detail names the quota (a per-day one is not worth
retrying); a 404 NOT_FOUND means the model id is unknown or shut down.

The SDK's own retries stay off (its default): retries happen in Celery, where
they are counted per item. ``GEMINI_API_KEY`` holds the key and
``GEMINI_API_BASE_URL`` lets tests point the SDK at a fake server.
"""

from __future__ import annotations

import os
import re
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
    TransientError,
)
from .http import check_image, short

TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}
REFUSAL_FINISH = {
    "SAFETY",
    "IMAGE_SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
}
ASPECT_RATIOS = (
    "1:1",
    "2:3",
    "3:2",
    "3:4",
    "4:3",
    "4:5",
    "5:4",
    "9:16",
    "16:9",
    "21:9",
)


@dataclass(frozen=True)
class GeminiModel:
    """What one image model takes (``imageConfig``)."""

    aspect_ratios: tuple[str, ...]
    image_sizes: tuple[str, ...]
    note: str = ""


# The one list of Gemini image models, from Google's "Gemini deprecations" and
# image-generation pages, checked on MODELS_CHECKED. docs/generation.md shows it.
MODELS_CHECKED = "2026-11-27"
MODELS: dict[str, GeminiModel] = {
    "gemini-3.1-flash-image": GeminiModel(
        aspect_ratios=ASPECT_RATIOS + ("1:4", "4:1", "1:8", "8:1"),
        image_sizes=("512", "1K", "2K", "4K"),
        note="Nano Banana 2, GA 2026-05-28; may return draft (thought) images",
    ),
    "gemini-3-pro-image": GeminiModel(
        aspect_ratios=ASPECT_RATIOS,
        image_sizes=("1K", "2K", "4K"),
        note="Nano Banana Pro, GA 2026-05-28; may return draft (thought) images",
    ),
}
# Shut down: refused at job creation. id -> (shutdown date, replacement).
RETIRED: dict[str, tuple[str, str]] = {
    "gemini-2.5-flash-image": ("2026-10-02", "gemini-3.1-flash-image"),
    "gemini-3-pro-image-preview": ("2026-06-25", "gemini-3-pro-image"),
    "gemini-3.1-flash-image-preview": ("2026-06-25", "gemini-3.1-flash-image"),
}
DEFAULT_MODEL = "gemini-3.1-flash-image"


def models_available() -> dict[str, GeminiModel]:
    """MODELS plus ids released after the list was checked
    (``GENERATION_GEMINI_EXTRA_MODELS``, comma-separated; retired ids stay out)."""
    extra = {
        m.strip(): GeminiModel(ASPECT_RATIOS, ("1K", "2K", "4K"), "added by setting")
        for m in os.environ.get("GENERATION_GEMINI_EXTRA_MODELS", "").split(",")
        if m.strip() and m.strip() not in RETIRED
    }
    return {**MODELS, **extra}


def _api_key() -> str:
    return (
        os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or ""
    ).strip()


def _base_url() -> str | None:
    return os.environ.get("GEMINI_API_BASE_URL") or getattr(
        settings, "GENERATION_GEMINI_BASE_URL", None
    )


class GeminiBackend(Backend):
    name = "gemini"
    default_model = DEFAULT_MODEL
    rate_limit = "60/m"
    concurrency = 8
    soft_time_limit = 180
    time_limit = 210
    allowed_params = {"aspect_ratio": str, "image_size": str, "timeout": (int, float)}

    def __init__(self):
        self._clients: dict[tuple, Any] = {}

    def validate(self, *, model: str, params: dict[str, Any]) -> None:
        super().validate(model=model, params=params)
        spec = self._model(model)
        if not _api_key():
            raise ConfigurationError(
                "The gemini backend needs an API key: set GEMINI_API_KEY in the "
                "environment of the web process and the workers."
            )
        if params.get("aspect_ratio", "1:1") not in spec.aspect_ratios:
            raise ConfigurationError(
                f"aspect_ratio for {model} must be one of "
                f"{', '.join(spec.aspect_ratios)}."
            )
        if params.get("image_size") and params["image_size"] not in spec.image_sizes:
            raise ConfigurationError(
                f"image_size for {model} must be one of {', '.join(spec.image_sizes)}."
            )

    @staticmethod
    def _model(model: str) -> GeminiModel:
        if model in RETIRED:
            shutdown, replacement = RETIRED[model]
            raise ConfigurationError(
                f"The Gemini model '{model}' was shut down on {shutdown}; use "
                f"'{replacement}' instead."
            )
        available = models_available()
        if model not in available:
            raise ConfigurationError(
                f"Unknown Gemini image model '{model}' (supported: "
                f"{', '.join(available)}; list checked {MODELS_CHECKED}; a newer "
                "model can be added with GENERATION_GEMINI_EXTRA_MODELS)."
            )
        return available[model]

    def _client(self, timeout_s: float):
        from google import genai
        from google.genai import types

        key = _api_key()
        cache_key = (key, _base_url(), timeout_s)
        if cache_key not in self._clients:
            self._clients[cache_key] = genai.Client(
                api_key=key,
                http_options=types.HttpOptions(
                    base_url=_base_url(), timeout=int(timeout_s * 1000)
                ),
            )
        return self._clients[cache_key]

    def generate(self, requests: list[GenerationRequest]) -> list[GeneratedImage]:
        return [self._one(req) for req in requests]

    def _one(self, req: GenerationRequest) -> GeneratedImage:
        from google.genai import errors, types

        if not _api_key():
            raise PermanentError("GEMINI_API_KEY is not set on this worker.")
        client = self._client(float(req.param("timeout", 120.0)))
        image_config = {"aspect_ratio": req.param("aspect_ratio", "1:1")}
        if req.params.get("image_size"):
            image_config["image_size"] = req.params["image_size"]
        prompt = req.prompt
        if req.negative_prompt:
            # Gemini has no negative prompt; say it in words.
            prompt = f"{prompt}\n\nAvoid: {req.negative_prompt}"
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            seed=int(req.seed) % (2**31),
            image_config=types.ImageConfig(**image_config),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(
                disable=True
            ),
        )
        started = time.monotonic()
        try:
            response = client.models.generate_content(
                model=req.model, contents=prompt, config=config
            )
        except errors.APIError as exc:
            raise _classify(exc, model=req.model) from exc
        except Exception as exc:
            # The SDK's HTTP layer (httpx or its fork httpx2, by version) raises its
            # own TimeoutException / TransportError classes: match them by name.
            names = {cls.__name__ for cls in type(exc).__mro__}
            if "TimeoutException" in names or isinstance(exc, TimeoutError):
                raise TransientError(
                    f"Gemini request timed out ({type(exc).__name__})."
                ) from exc
            if "TransportError" in names or isinstance(exc, ConnectionError):
                raise TransientError(f"Gemini connection failed: {exc}.") from exc
            if isinstance(exc, (ValueError, TypeError, KeyError)):
                # The SDK could not parse the body (not JSON, wrong shapes).
                raise PermanentError(
                    f"Malformed Gemini response: {short(str(exc), 300)}"
                ) from exc
            raise
        data, mime = self._extract(response)
        usage = getattr(response, "usage_metadata", None)
        provenance = {
            "gemini": {
                "response_id": getattr(response, "response_id", None),
                "model_version": getattr(response, "model_version", None),
                "mime_type": mime,
                "usage": usage.model_dump(exclude_none=True) if usage else None,
                "latency_s": round(time.monotonic() - started, 3),
            }
        }
        return GeneratedImage(data=data, provenance=provenance)

    @staticmethod
    def _extract(response) -> tuple[bytes, str]:
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and getattr(feedback, "block_reason", None):
            reason = _enum_name(feedback.block_reason)
            extra = getattr(feedback, "block_reason_message", None)
            raise ModerationRefused(
                f"Gemini blocked the prompt: {reason}"
                + (f" ({extra})" if extra else "")
            )
        candidates = getattr(response, "candidates", None) or []
        if not candidates:
            raise PermanentError("Malformed Gemini response: no candidates.")
        candidate = candidates[0]
        parts = getattr(getattr(candidate, "content", None), "parts", None) or []
        final, drafts, texts = _image_parts(parts)
        if final is not None:
            check_image(final.data, what="Malformed Gemini response: the inline data")
            return final.data, final.mime_type
        said = f" The model said: {short(' '.join(texts), 300)}" if texts else ""
        finish = _enum_name(getattr(candidate, "finish_reason", None))
        if finish in REFUSAL_FINISH:
            message = getattr(candidate, "finish_message", None)
            raise ModerationRefused(
                f"Gemini refused to produce the image: {finish}"
                + (f" ({short(message, 200)})" if message else "")
                + "."
                + said
            )
        drafted = f" ({drafts} draft image(s) only)" if drafts else ""
        raise PermanentError(
            f"Gemini returned no image (finish reason {finish or 'none'}){drafted}."
            + said
        )


def _image_parts(parts) -> tuple[Any, int, list[str]]:
    """(the final image's inline data, how many drafts came before it, the
    model's non-thought text). Gemini 3 image models may first send draft images
    as parts with ``thought: true``; the image is the last part that is not one."""
    final, drafts, texts = None, 0, []
    for part in parts:
        thought = bool(getattr(part, "thought", False))
        inline = getattr(part, "inline_data", None)
        if (
            inline is not None
            and inline.data
            and (inline.mime_type or "").startswith("image/")
        ):
            if thought:
                drafts += 1
            else:
                final = inline
        elif getattr(part, "text", None) and not thought:
            texts.append(part.text)
    return final, drafts, texts


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _error_details(exc) -> list[dict]:
    """The ``error.details`` list of a Google API error body (google.rpc types)."""
    body = getattr(exc, "details", None)
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details or [] if isinstance(d, dict)]


def _retry_delay(details: list[dict]) -> float | None:
    """Seconds from ``google.rpc.RetryInfo.retryDelay`` (a JSON Duration, "12.5s")."""
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _daily_quota(details: list[dict]) -> str | None:
    """The quotaId of a per-day quota violation (``google.rpc.QuotaFailure``)."""
    for detail in details:
        if not str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            continue
        for violation in detail.get("violations") or []:
            quota_id = str((violation or {}).get("quotaId", ""))
            if "PerDay" in quota_id:
                return quota_id
    return None


def _classify(exc, *, model: str) -> Exception:
    code = getattr(exc, "code", None) or 0
    message = getattr(exc, "message", None) or str(exc)
    text = f"Gemini HTTP {code}: {short(message, 300)}"
    if code == 404:
        return PermanentError(
            f"Gemini has no model '{model}' (retired or unknown): {text}",
            provider_status=code,
        )
    details = _error_details(exc)
    if code == 429 and (quota := _daily_quota(details)):
        # Retrying before the daily reset only burns attempts.
        return PermanentError(
            f"{text} (daily quota {quota} used up; not retried)",
            provider_status=code,
        )
    if code in TRANSIENT_HTTP:
        return TransientError(
            text, retry_after=_retry_delay(details), provider_status=code
        )
    return PermanentError(text, provider_status=code)


def _enum_name(value) -> str:
    if value is None:
        return ""
    return getattr(value, "value", None) or getattr(value, "name", None) or str(value)
