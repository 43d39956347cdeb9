"""The contract every generation backend fulfils, and the errors it may raise.

A backend turns one or more :class:`GenerationRequest` into :class:`GeneratedImage`
results. It never touches the database: the Celery task (``generation.services.
item_run``) stores the bytes through ``annotation.services.image_create``. Errors are
split in two so the task knows what to do:

* :class:`TransientError` - rate limits, 5xx, timeouts, connection resets: retried
  with exponential backoff (or after the provider's ``Retry-After``);
* :class:`PermanentError` - moderation refusals, invalid requests, malformed
  responses: the item is marked failed with the provider's message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class BackendError(Exception):
    """Base for errors raised by backends; ``message`` is shown to researchers."""

    def __init__(self, message: str, *, provider_status: int | None = None):
        super().__init__(message)
        self.message = message
        self.provider_status = provider_status


class TransientError(BackendError):
    """Worth retrying later (429, 5xx, timeout, connection error)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider_status: int | None = None,
    ):
        super().__init__(message, provider_status=provider_status)
        self.retry_after = retry_after


class PermanentError(BackendError):
    """Retrying cannot help (bad request, moderation, malformed response)."""


class ModerationRefused(PermanentError):
    """The provider refused the prompt or the output for content reasons."""


class ConfigurationError(Exception):
    """The backend cannot be used as configured (unknown model, missing API key).

    Raised by ``validate`` before anything is queued.
    """


def _type_ok(value: Any, expected: type | tuple[type, ...]) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):  # bool is an int to Python, not to a JSON schema
        return bool in types
    return isinstance(value, types) or (float in types and isinstance(value, int))


@dataclass(frozen=True)
class ProviderTask:
    """A task the provider is running for one item (FLUX: id + polling_url)."""

    id: str
    polling_url: str


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    seed: int
    model: str
    negative_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # For backends that submit a paid task and poll it: the task an earlier
    # attempt of this item submitted (resume it rather than pay again), and the
    # callback that records a new one on the item the moment it exists (None
    # forgets it once it is known to be gone).
    task: ProviderTask | None = None
    task_store: Callable[[ProviderTask | None], None] | None = field(
        default=None, compare=False, repr=False
    )

    def param(self, name: str, default: Any = None) -> Any:
        value = self.params.get(name)
        return default if value is None else value


@dataclass
class GeneratedImage:
    data: bytes
    # Recorded in Image.provenance next to what the task adds (backend, model,
    # seed, prompt, timing): provider request ids, cost, attributes used.
    provenance: dict[str, Any] = field(default_factory=dict)
    extension: str = "png"


class Backend:
    """One image generator. Subclasses set the class attributes and ``generate``.

    ``generate`` returns one result per request, in order: a GeneratedImage, or
    a BackendError when only that image failed (a safety-checker hit in a batch);
    raising fails (or retries) every request of the call."""

    name: str = ""
    default_model: str = ""
    # Celery queue its tasks go to (diffusers: "gpu", so GPU workers can run
    # elsewhere) and the defaults for the per-backend limits (see generation.conf).
    queue: str = "default"
    rate_limit: str | None = None
    concurrency: int = 0  # 0 = only bounded by the workers' own concurrency
    soft_time_limit: int = 120
    time_limit: int = 150
    max_batch: int = 1
    # Params a job may set, with their allowed type; anything else is refused.
    allowed_params: dict[str, type | tuple[type, ...]] = {}

    def validate(self, *, model: str, params: dict[str, Any]) -> None:
        """Raise ConfigurationError when a job with this model/params cannot run."""
        for key, value in params.items():
            expected = self.allowed_params.get(key)
            if expected is None:
                raise ConfigurationError(
                    f"Backend '{self.name}' does not take the parameter '{key}' "
                    f"(it takes: {', '.join(sorted(self.allowed_params)) or 'none'})."
                )
            if value is not None and not _type_ok(value, expected):
                raise ConfigurationError(
                    f"Parameter '{key}' has the wrong type ({type(value).__name__})."
                )

    def generate(
        self, requests: list[GenerationRequest]
    ) -> list[GeneratedImage | BackendError]:
        raise NotImplementedError
