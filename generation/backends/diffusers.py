"""Local diffusers pipelines (FLUX.2, SDXL, SD-Turbo, ...) by model id or path.

The pipeline is loaded once per worker process and kept (``_PIPELINES``), on the
GPU when there is one. A model too big for the card (FLUX.2 [dev] does not fit
an 80 GB GPU with ``.to("cuda")``) is loaded with diffusers' documented
``enable_model_cpu_offload`` (param ``offload``; per-model default in
``MODEL_DEFAULTS``, which also holds each model's documented steps, guidance and
size). Seeds drive a CPU ``torch.Generator``, so a seed gives the same image on
any card. Out of memory, at load or inside the pipeline call, is transient (the
item is retried; the message suggests offload or a smaller batch). A safety-checker
hit fails that image only; the rest of the batch is kept.

torch and diffusers are imported inside functions only, so importing this module
(the registry does, in the web process) costs nothing.

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
_PIPELINES: dict[tuple[str, str, str, str], Any] = {}
_LOCK = threading.Lock()
DTYPES = ("auto", "float32", "float16", "bfloat16")
OFFLOADS = ("none", "model", "sequential")

# What each model's card / diffusers pipeline documents (checked 2026-11-27); a job's
# own params win, and a model not listed gets its pipeline's own defaults.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # Distilled one-step models: more steps or any guidance make them worse.
    "stabilityai/sd-turbo": {
        "steps": 1,
        "guidance_scale": 0.0,
        "width": 512,
        "height": 512,
    },
    "stabilityai/sdxl-turbo": {
        "steps": 1,
        "guidance_scale": 0.0,
        "width": 512,
        "height": 512,
    },
    "black-forest-labs/FLUX.1-schnell": {
        "steps": 4,
        "guidance_scale": 0.0,
        "width": 1024,
        "height": 1024,
        "offload": "model",
    },
    "black-forest-labs/FLUX.1-dev": {
        "steps": 50,
        "guidance_scale": 3.5,
        "width": 1024,
        "height": 1024,
        "offload": "model",
    },
    # About 32B parameters plus a 24B text encoder: more than an 80 GB card holds.
    "black-forest-labs/FLUX.2-dev": {
        "steps": 50,
        "guidance_scale": 4.0,
        "width": 1024,
        "height": 1024,
        "offload": "model",
    },
}


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


def pipelines_loaded() -> list[tuple[str, str, str, str]]:
    """(model, device, dtype, offload) of the pipelines this process holds."""
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
        "offload": str,
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
        if params.get("offload", "none") not in OFFLOADS:
            raise ConfigurationError(f"offload must be one of {', '.join(OFFLOADS)}.")
        if params.get("guidance_scale", 0) < 0:
            raise ConfigurationError("guidance_scale cannot be negative.")

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

    def pipeline(self, model: str, device: str, dtype_name: str, offload: str = "none"):
        """The cached pipeline for (model, device, dtype, offload), loaded on first
        use. With ``offload`` on an accelerator the weights stay in CPU memory and
        each component moves to the card only while it runs."""
        key = (model, device, dtype_name, offload)
        with _LOCK:
            if key not in _PIPELINES:
                _PIPELINES[key] = self._load(model, device, dtype_name, offload)
            return _PIPELINES[key]

    def _load(self, model: str, device: str, dtype_name: str, offload: str):
        from diffusers import DiffusionPipeline

        try:
            pipe = DiffusionPipeline.from_pretrained(
                str(Path(model).expanduser())
                if model.startswith(("/", ".", "~"))
                else model,
                dtype=self._dtype(dtype_name, device),
                local_files_only=_local_files_only(),
            )
        except Exception as exc:  # missing files, bad config, wrong class, OOM
            _raise_if_oom(exc, f"loading '{model}'")
            raise PermanentError(
                f"Could not load diffusers model '{model}': {exc}"
            ) from exc
        try:
            if offload == "none" or device == "cpu":  # nothing to offload to
                pipe = pipe.to(device)
            elif offload == "model":
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.enable_sequential_cpu_offload(device=device)
        except Exception as exc:
            _raise_if_oom(exc, f"moving '{model}' to {device}")
            raise
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- generating ------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list:
        import torch

        first = requests[0]
        if any(r.model != first.model or r.params != first.params for r in requests):
            raise PermanentError("A diffusers batch must share model and parameters.")
        settings = {**MODEL_DEFAULTS.get(first.model, {}), **_set(first.params)}
        device = self._device(settings.get("device"))
        dtype_name = settings.get("dtype", "auto")
        offload = settings.get("offload", "none")
        pipe = self.pipeline(first.model, device, dtype_name, offload)
        kwargs = _call_kwargs(pipe, requests, settings)
        try:
            with torch.inference_mode():
                output = pipe(**kwargs)
        except Exception as exc:
            _raise_if_oom(exc, f"generating {len(requests)} image(s)")
            raise
        flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(
            requests
        )
        info = {
            "pipeline": type(pipe).__name__,
            "scheduler": type(pipe.scheduler).__name__
            if getattr(pipe, "scheduler", None)
            else None,
            "device": device,
            "dtype": str(self._dtype(dtype_name, device)).replace("torch.", ""),
            "offload": offload if device != "cpu" else "none",
            "generator": "cpu",
            "steps": kwargs.get("num_inference_steps"),
            "guidance_scale": kwargs.get("guidance_scale"),
            "batch_size": len(requests),
            "torch": torch.__version__,
            "diffusers": _diffusers_version(),
        }
        return [
            _result(req, image, nsfw, info)
            for req, image, nsfw in zip(requests, output.images, flagged, strict=True)
        ]


def _set(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _call_kwargs(pipe, requests: list[GenerationRequest], settings: dict) -> dict:
    import torch

    accepted = inspect.signature(pipe.__call__).parameters
    kwargs: dict[str, Any] = {
        "prompt": [r.prompt for r in requests],
        # A CPU generator: the same seed gives the same noise on any card.
        "generator": [
            torch.Generator(device="cpu").manual_seed(int(r.seed) % (2**63))
            for r in requests
        ],
        "output_type": "pil",
    }
    names = {
        "steps": "num_inference_steps",
        "guidance_scale": "guidance_scale",
        "width": "width",
        "height": "height",
    }
    for ours, theirs in names.items():
        if ours in settings and theirs in accepted:
            kwargs[theirs] = settings[ours]
    if "negative_prompt" in accepted and any(r.negative_prompt for r in requests):
        kwargs["negative_prompt"] = [r.negative_prompt for r in requests]
    return kwargs


def _result(req: GenerationRequest, image, nsfw: bool, info: dict):
    if nsfw:
        # Only this image: the others of the batch are fine and kept.
        return ModerationRefused(
            f"The pipeline's safety checker flagged seed {req.seed}."
        )
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return GeneratedImage(
        data=buf.getvalue(),
        provenance={
            "diffusers": {**info, "width": image.width, "height": image.height}
        },
    )


def _raise_if_oom(exc: BaseException, doing: str) -> None:
    """Out of memory (CUDA's OutOfMemoryError, or MPS's RuntimeError) becomes a
    TransientError: the memory may be free on the next try or another worker."""
    import torch

    oom = isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )
    if not oom:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    raise TransientError(
        f"Out of memory {doing}: {text.splitlines()[0]}. "
        "A smaller batch_size, offload='model' or dtype 'bfloat16' needs less."
    ) from exc


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
