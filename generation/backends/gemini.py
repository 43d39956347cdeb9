"""Gemini image models ("Nano Banana") through the official ``google-genai`` SDK.

``client.models.generate_content`` with ``response_modalities=["IMAGE"]`` posts
to ``{base}/v1beta/models/{model}:generateContent``; the image comes back as an
``inlineData`` part (base64, decoded by the SDK). A blocked prompt has
``promptFeedback.blockReason``; a blocked output has a candidate
``finishReason`` such as ``IMAGE_SAFETY`` or ``PROHIBITED_CONTENT``.

The SDK's own retries stay off (its default): retries happen in Celery, where
they are counted per item. ``GEMINI_API_KEY`` holds the key and
``GEMINI_API_BASE_URL`` lets tests point the SDK at a fake server.
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
    default_model = "gemini-2.5-flash-image"
    rate_limit = "60/m"
    concurrency = 8
    soft_time_limit = 180
    time_limit = 210
    allowed_params = {"aspect_ratio": str, "image_size": str, "timeout": (int, float)}

    def __init__(self):
        self._clients: dict[tuple, Any] = {}

    def validate(self, *, model: str, params: dict[str, Any]) -> None:
        super().validate(model=model, params=params)
        if not (model.startswith("gemini-") and "image" in model):
            raise ConfigurationError(
                f"Unknown model '{model}' for backend 'gemini': use a Gemini image "
                "model such as gemini-2.5-flash-image or gemini-3-pro-image-preview."
            )
        if not _api_key():
            raise ConfigurationError(
                "The gemini backend needs an API key: set GEMINI_API_KEY in the "
                "environment of the web process and the workers."
            )
        if params.get("aspect_ratio", "1:1") not in ASPECT_RATIOS:
            raise ConfigurationError(
                f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}."
            )

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
            raise self._classify(exc) from exc
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
    def _classify(exc) -> Exception:
        code = getattr(exc, "code", None) or 0
        message = getattr(exc, "message", None) or str(exc)
        text = f"Gemini HTTP {code}: {short(message, 300)}"
        if code in TRANSIENT_HTTP:
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or {}
            return TransientError(
                text,
                retry_after=parse_retry_after(headers.get("retry-after")),
                provider_status=code,
            )
        return PermanentError(text, provider_status=code)

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
        finish = _enum_name(getattr(candidate, "finish_reason", None))
        parts = getattr(getattr(candidate, "content", None), "parts", None) or []
        texts = []
        for part in parts:
            inline = getattr(part, "inline_data", None)
            if (
                inline is not None
                and inline.data
                and (inline.mime_type or "").startswith("image/")
            ):
                check_image(
                    inline.data,
                    what="Malformed Gemini response: the inline data",
                )
                return inline.data, inline.mime_type
            if getattr(part, "text", None):
                texts.append(part.text)
        said = f" The model said: {short(' '.join(texts), 300)}" if texts else ""
        if finish in REFUSAL_FINISH:
            message = getattr(candidate, "finish_message", None)
            raise ModerationRefused(
                f"Gemini refused to produce the image: {finish}"
                + (f" ({short(message, 200)})" if message else "")
                + "."
                + said
            )
        raise PermanentError(
            f"Gemini returned no image (finish reason {finish or 'none'}).{said}"
        )


def _enum_name(value) -> str:
    if value is None:
        return ""
    return getattr(value, "value", None) or getattr(value, "name", None) or str(value)
