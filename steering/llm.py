"""A small client for OpenAI-compatible chat completions (``POST {base}/v1/chat/
completions``), as documented by OpenAI and spoken by most hosted and local LLM
servers.

Configured by ``STEERING_LLM_URL`` (the server's base URL, with or without the
trailing ``/v1``), ``STEERING_LLM_API_KEY`` (sent as ``Authorization: Bearer``) and
``STEERING_LLM_MODEL`` (Django settings or environment). Errors are split as the
generation backends split them: rate limits (429), server errors (5xx), timeouts
and dropped connections are retried a few times with backoff (the server's
``Retry-After`` is a floor); anything else, refusals (``message.refusal`` or
``finish_reason == "content_filter"``) and malformed answers fail at once with the
provider's message.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF = 30.0


class LLMError(Exception):
    """The chat API gave no usable answer; ``message`` is for a person."""

    def __init__(self, message: str, *, transient: bool = False, status=None):
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status
        self.retry_after: float | None = None


class LLMRefused(LLMError):
    """The model refused (a refusal message or a content filter)."""


def _setting(name: str, default: str = "") -> str:
    return str(getattr(settings, name, None) or os.environ.get(name) or default)


@dataclass
class ChatConfig:
    base_url: str
    api_key: str
    model: str
    timeout: float = 30.0
    max_retries: int = 2

    @classmethod
    def from_settings(cls) -> ChatConfig:
        url = _setting("STEERING_LLM_URL")
        if not url:
            raise LLMError(
                "No LLM configured: set STEERING_LLM_URL (an OpenAI-compatible "
                "server) and STEERING_LLM_API_KEY."
            )
        return cls(
            base_url=url,
            api_key=_setting("STEERING_LLM_API_KEY"),
            model=_setting("STEERING_LLM_MODEL", "gpt-4o-mini"),
            timeout=float(_setting("STEERING_LLM_TIMEOUT", "30")),
            max_retries=int(_setting("STEERING_LLM_MAX_RETRIES", "2")),
        )

    @property
    def endpoint(self) -> str:
        base = self.base_url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        return base + "/chat/completions"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _error_message(response) -> str:
    try:
        err = response.json().get("error") or {}
        msg = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        msg = None
    text = msg or response.text[:300] or response.reason_phrase
    return f"HTTP {response.status_code}: {' '.join(str(text).split())[:300]}"


def _content(payload) -> str:
    """The assistant's text from a chat completion, or LLMError/LLMRefused."""
    try:
        choice = payload["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise LLMError("Malformed answer: no choices[0].message.") from None
    if not isinstance(message, dict):
        raise LLMError("Malformed answer: message is not an object.")
    if message.get("refusal"):
        raise LLMRefused(f"The model refused: {str(message['refusal'])[:300]}")
    if choice.get("finish_reason") == "content_filter":
        raise LLMRefused("The model's answer was withheld by its content filter.")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise LLMError("Malformed answer: empty message content.")
    return content


def chat_complete(
    *,
    config: ChatConfig,
    messages: list[dict],
    temperature: float = 0.9,
    json_mode: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """The assistant's reply text. Retries transient failures, then raises."""
    import httpx

    body = {"model": config.model, "messages": messages, "temperature": temperature}
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    headers = {"Authorization": f"Bearer {config.api_key}"}
    last: LLMError | None = None
    for attempt in range(config.max_retries + 1):
        if attempt:
            wait = min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
            sleep(max(wait, min(MAX_BACKOFF, (last and last.retry_after) or 0.0)))
        try:
            response = httpx.post(
                config.endpoint, json=body, headers=headers, timeout=config.timeout
            )
        except httpx.TimeoutException:
            last = LLMError(
                f"The LLM server did not answer within {config.timeout:g} s.",
                transient=True,
            )
            continue
        except httpx.TransportError as exc:
            last = LLMError(f"Could not reach the LLM server: {exc}", transient=True)
            continue
        if response.status_code in RETRY_STATUSES:
            last = LLMError(
                _error_message(response), transient=True, status=response.status_code
            )
            last.retry_after = _retry_after(response.headers.get("retry-after"))
            continue
        if response.status_code != 200:
            raise LLMError(_error_message(response), status=response.status_code)
        try:
            payload = response.json()
        except ValueError:
            raise LLMError("Malformed answer: the body is not JSON.") from None
        return _content(payload)
    assert last is not None
    last.message = f"{last.message} (gave up after {config.max_retries + 1} tries)"
    raise last


# What is kept of an answer: it becomes Candidate rows and generation prompts,
# so it must be text PostgreSQL stores (no NUL) and a prompt generation accepts.
MAX_ANSWER_CHARS = 256 * 1024
MAX_PROMPTS = 100


def _prompt_max_chars() -> int:
    from generation.models import PROMPT_MAX_CHARS

    return PROMPT_MAX_CHARS


def clean_prompt(value: str) -> str:
    """One line of printable text: control characters (NUL included) become
    spaces, runs of white space one space."""
    text = "".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in value)
    return " ".join(text.split())


def parse_prompt_list(text: str) -> list[str]:
    """Prompts from the model's JSON answer: ``{"prompts": [...]}`` or a bare list,
    possibly inside a Markdown code fence. Raises LLMError when it is neither.
    Each prompt is cleaned (``clean_prompt``); one longer than a generation
    prompt may be (``PROMPT_MAX_CHARS``) is dropped; at most ``MAX_PROMPTS``."""
    if len(text) > MAX_ANSWER_CHARS:
        raise LLMError(
            f"Malformed answer: {len(text)} characters, over {MAX_ANSWER_CHARS}."
        )
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text.split("\n", 1)[1] if "\n" in text else text
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise LLMError("Malformed answer: not JSON.") from None
    if isinstance(data, dict):
        data = data.get("prompts")
    if not isinstance(data, list) or not data:
        raise LLMError('Malformed answer: expected {"prompts": [...]} with strings.')
    limit = _prompt_max_chars()
    cleaned = [clean_prompt(p) for p in data[:MAX_PROMPTS] if isinstance(p, str)]
    out = [p for p in cleaned if p and len(p) <= limit]
    if not out:
        raise LLMError(
            "Malformed answer: the prompt list holds no text of at most "
            f"{limit} characters."
        )
    return out
