"""Registry of generation backends, keyed by name.

Modules are imported on first use, so asking for ``procedural`` never imports torch
(diffusers) or an HTTP SDK.
"""

from __future__ import annotations

import importlib

from .base import (
    Backend,
    BackendError,
    ConfigurationError,
    GeneratedImage,
    GenerationRequest,
    ModerationRefused,
    PermanentError,
    ProviderTask,
    TransientError,
)

__all__ = [
    "Backend",
    "BackendError",
    "ConfigurationError",
    "GeneratedImage",
    "GenerationRequest",
    "ModerationRefused",
    "PermanentError",
    "ProviderTask",
    "TransientError",
    "BACKENDS",
    "backend_get",
]

# name -> "module:ClassName"
BACKENDS: dict[str, str] = {
    "procedural": "generation.backends.procedural:ProceduralBackend",
    "diffusers": "generation.backends.diffusers:DiffusersBackend",
    "flux": "generation.backends.flux:FluxBackend",
    "gemini": "generation.backends.gemini:GeminiBackend",
}

_instances: dict[str, Backend] = {}


def backend_get(name: str) -> Backend:
    """The backend instance for ``name`` (one per process, so caches persist)."""
    if name not in BACKENDS:
        raise ConfigurationError(
            f"Unknown backend '{name}' (available: {', '.join(sorted(BACKENDS))})."
        )
    if name not in _instances:
        module_name, cls_name = BACKENDS[name].split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        _instances[name] = cls()
    return _instances[name]
