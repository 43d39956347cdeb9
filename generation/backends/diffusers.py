"""Local diffusers pipelines (FLUX.2, SDXL, SD-Turbo, ...) by model id or path.

The pipeline is loaded once per worker process and kept (``_PIPELINES``), on the
GPU when there is one. torch and diffusers are imported inside functions only,
so importing this module (the registry does, in the web process) costs nothing.

Weights must already be on the worker (``huggingface-cli download`` into the HF
cache, or a local folder): loading uses ``local_files_only`` unless
``GENERATION_DIFFUSERS_LOCAL_FILES_ONLY=0``. ``GENERATION_DIFFUSERS_MODELS``
(comma-separated) restricts which models jobs may ask for.
"""

from __future__ import annotations

import inspect
import io
import os
import re
import threading
from pathlib import Path
from typing import Any

from .base import (
    Backend,
    ConfigurationError,
    GeneratedImage,
    GenerationRequest,
    ModerationRefused,
    PermanentError,
    TransientError,
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PIPELINES: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()
DTYPES = ("auto", "float32", "float16", "bfloat16")


def _allowed_models() -> list[str]:
    return [
        m.strip()
        for m in os.environ.get("GENERATION_DIFFUSERS_MODELS", "").split(",")
        if m.strip()
    ]


def _local_files_only() -> bool:
    return os.environ.get("GENERATION_DIFFUSERS_LOCAL_FILES_ONLY", "1").lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def pipelines_loaded() -> list[tuple[str, str, str]]:
    """(model, device, dtype) of the pipelines this process holds."""
    return list(_PIPELINES)


class DiffusersBackend(Backend):
    name = "diffusers"
    default_model = "stabilityai/sd-turbo"
    queue = "gpu"
    rate_limit = None
    concurrency = 0  # one GPU worker process per card (-c 1) bounds it
    soft_time_limit = 900
    time_limit = 960
    max_batch = 16
    allowed_params = {
        "steps": int,
        "guidance_scale": (int, float),
        "width": int,
        "height": int,
        "batch_size": int,
        "dtype": str,
        "device": str,
    }

    def validate(self, *, model: str, params: dict[str, Any]) -> None:
        super().validate(model=model, params=params)
        allowed = _allowed_models()
        if allowed and model not in allowed:
            raise ConfigurationError(
                f"Unknown model '{model}' for backend 'diffusers' "
                f"(this deployment allows: {', '.join(allowed)})."
            )
        is_path = model.startswith(("/", ".", "~"))
        if is_path:
            if not (Path(model).expanduser() / "model_index.json").is_file():
                raise ConfigurationError(
                    f"Unknown model '{model}': no diffusers pipeline "
                    "(model_index.json) in that folder."
                )
        elif not _HUB_ID.match(model):
            raise ConfigurationError(
                f"Unknown model '{model}': use a Hugging Face id like "
                "'stabilityai/sd-turbo' or a local pipeline folder."
            )
        steps = params.get("steps", 1)
        if not 1 <= steps <= 200:
            raise ConfigurationError("steps must be between 1 and 200.")
        for key in ("width", "height"):
            if key in params and (not 16 <= params[key] <= 4096 or params[key] % 8):
                raise ConfigurationError(
                    f"{key} must be a multiple of 8 between 16 and 4096."
                )
        if not 1 <= params.get("batch_size", 1) <= self.max_batch:
            raise ConfigurationError(
                f"batch_size must be between 1 and {self.max_batch}."
            )
        if params.get("dtype", "auto") not in DTYPES:
            raise ConfigurationError(f"dtype must be one of {', '.join(DTYPES)}.")

    # -- loading ---------------------------------------------------------------

    @staticmethod
    def _device(requested: str | None) -> str:
        import torch

        if requested:
            return requested
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    @staticmethod
    def _dtype(name: str, device: str):
        import torch

        if name == "auto":
            if device == "cuda":
                return (
                    torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                )
            return torch.float32
        return getattr(torch, name)

    def pipeline(self, model: str, device: str, dtype_name: str):
        """The cached pipeline for (model, device, dtype), loaded on first use."""
        key = (model, device, dtype_name)
        with _LOCK:
            if key not in _PIPELINES:
                from diffusers import DiffusionPipeline

                try:
                    pipe = DiffusionPipeline.from_pretrained(
                        str(Path(model).expanduser())
                        if model.startswith(("/", ".", "~"))
                        else model,
                        dtype=self._dtype(dtype_name, device),
                        local_files_only=_local_files_only(),
                    )
                except Exception as exc:  # missing files, bad config, wrong class
                    raise PermanentError(
                        f"Could not load diffusers model '{model}': {exc}"
                    ) from exc
                pipe = pipe.to(device)
                pipe.set_progress_bar_config(disable=True)
                _PIPELINES[key] = pipe
            return _PIPELINES[key]

    # -- generating ------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[GeneratedImage]:
        import torch

        first = requests[0]
        if any(r.model != first.model or r.params != first.params for r in requests):
            raise PermanentError("A diffusers batch must share model and parameters.")
        device = self._device(first.params.get("device"))
        dtype_name = first.param("dtype", "auto")
        pipe = self.pipeline(first.model, device, dtype_name)
        accepted = inspect.signature(pipe.__call__).parameters
        kwargs: dict[str, Any] = {
            "prompt": [r.prompt for r in requests],
            "num_inference_steps": int(first.param("steps", 30)),
            "generator": [
                torch.Generator(
                    device="cpu" if device == "mps" else device
                ).manual_seed(int(r.seed) % (2**63))
                for r in requests
            ],
            "output_type": "pil",
        }
        for name in ("width", "height", "guidance_scale"):
            if first.params.get(name) is not None and name in accepted:
                kwargs[name] = first.params[name]
        if "negative_prompt" in accepted and any(r.negative_prompt for r in requests):
            kwargs["negative_prompt"] = [r.negative_prompt for r in requests]
        try:
            with torch.inference_mode():
                output = pipe(**kwargs)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise TransientError(f"GPU out of memory: {exc}") from exc
        flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(
            requests
        )
        results = []
        for req, image, nsfw in zip(requests, output.images, flagged, strict=True):
            if nsfw:
                raise ModerationRefused(
                    f"The pipeline's safety checker flagged seed {req.seed}."
                )
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            results.append(
                GeneratedImage(
                    data=buf.getvalue(),
                    provenance={
                        "diffusers": {
                            "pipeline": type(pipe).__name__,
                            "scheduler": type(pipe.scheduler).__name__
                            if getattr(pipe, "scheduler", None)
                            else None,
                            "device": device,
                            "dtype": str(self._dtype(dtype_name, device)).replace(
                                "torch.", ""
                            ),
                            "steps": kwargs["num_inference_steps"],
                            "guidance_scale": kwargs.get("guidance_scale"),
                            "batch_size": len(requests),
                            "width": image.width,
                            "height": image.height,
                            "torch": torch.__version__,
                            "diffusers": _diffusers_version(),
                        }
                    },
                )
            )
        return results


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
