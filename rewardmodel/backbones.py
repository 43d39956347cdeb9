"""Image backbones that turn pixels into L2-normalised embeddings.

The product's backbone is named ``open_clip:<model>:<pretrained tag>`` (the real
``open_clip.create_model_and_transforms``). Other kinds can be registered with
``backbone_register`` (the benchmarks register their feature extractors this way;
none of them is part of the product). torch and open_clip are imported inside the
functions: this module is safe to import anywhere.

Offline, loading pretrained weights fails fast and once: a 2-second check of the
hub (the host of ``HF_ENDPOINT``) decides, once per process and before open_clip
(and with it huggingface_hub) is imported; when it is unreachable the process is
offline for good: ``HF_HUB_OFFLINE=1`` and huggingface_hub's own flag, which it
reads once at import (setting only the variable after that import was ignored,
and the worker spent 46 s retrying HEAD requests). The open_clip backbone then
builds the same architecture with random weights **seeded from the backbone's
name** (so two processes embed identically) and says so loudly: a WARNING in the
log, ``weights_loaded=False`` and ``warning`` on the backbone, which the training
run copies onto its ModelVersion.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
_CACHE: dict[str, Backbone] = {}


@dataclass
class Backbone:
    key: str
    dim: int
    weights_loaded: bool
    warning: str = ""
    device: str = "cpu"
    # Threads that decode and preprocess a batch (see OpenClipBackbone.pixels).
    prep_threads: int = 1
    _model: Any = field(default=None, repr=False)
    _preprocess: Any = field(default=None, repr=False)

    def embed(self, images: list) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


_FACTORIES: dict[str, Any] = {}
DEFAULT_HUB = "https://huggingface.co"
# The process's decision: {"online": bool, "address": "host:port"}, made once.
_HUB: dict[str, Any] = {}


def backbone_register(kind: str, factory) -> None:
    """``factory(key) -> Backbone`` for keys ``<kind>:...`` (benchmarks, tests)."""
    _FACTORIES[kind] = factory


def parse_key(key: str) -> tuple[str, str, str]:
    parts = key.split(":")
    kind = parts[0]
    if kind == "open_clip":
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError(f"Backbone '{key}': use open_clip:<model>[:<pretrained>]")
        return kind, parts[1], parts[2] if len(parts) == 3 else ""
    if kind in _FACTORIES:
        return kind, ":".join(parts[1:]), ""
    raise ValueError(f"Unknown backbone '{key}' (use open_clip:<model>[:<tag>])")


def hub_address() -> tuple[str, int]:
    """Host and port of the hub huggingface_hub talks to (``HF_ENDPOINT``)."""
    url = urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_HUB)
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname or "huggingface.co", port


def _offline_env() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return (value or "").upper() in {"1", "ON", "YES", "TRUE"}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the weights hub answers: one connection attempt per process, never
    repeated. Unreachable: the process goes offline (``_go_offline``), so cached
    weights still load and no library retries."""
    if "online" not in _HUB:
        host, port = hub_address()
        _HUB["address"] = f"{host}:{port}"
        if _offline_env():
            _HUB["online"] = False
        else:
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                _HUB["online"] = True
            except OSError:
                _HUB["online"] = False
                logger.warning(
                    "The Hugging Face hub (%s:%s) is unreachable: offline mode "
                    "(HF_HUB_OFFLINE=1) for this process; only weights already on "
                    "disk can load.",
                    host,
                    port,
                )
        if not _HUB["online"]:
            _go_offline()
    return _HUB["online"]


def _go_offline() -> None:
    """Offline for this process and its children. huggingface_hub reads the
    variable once, when it is imported: if it already is, its flag is set too."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def hub_status() -> str:
    """The process's hub decision in words (for the run log)."""
    if "online" not in _HUB:
        return "model hub not consulted"
    if _HUB["online"]:
        return f"model hub reachable ({_HUB['address']})"
    return (
        f"model hub unreachable ({_HUB['address']}): offline for this worker, "
        "no download attempted"
    )


def name_seed(key: str) -> int:
    """A seed from the backbone's name: random weights, when they must be used,
    are the same in every process."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


def register_configs() -> None:
    """Make the JSON configs shipped here (e.g. ``palate-tiny-vit``) known to
    open_clip, through its public ``add_model_config``."""
    import open_clip

    if "palate-tiny-vit" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def backbone_loaded(key: str, *, device: str | None = None) -> bool:
    """Whether ``get_backbone`` has built this backbone already (no load to wait)."""
    return f"{key}@{device or 'auto'}" in _CACHE


def get_backbone(key: str, *, device: str | None = None) -> Backbone:
    """The backbone for a key, built once per process."""
    cache_key = f"{key}@{device or 'auto'}"
    if cache_key not in _CACHE:
        kind, _, _ = parse_key(key)
        if kind == "open_clip":
            _CACHE[cache_key] = OpenClipBackbone.build(key, device=device)
        else:
            _CACHE[cache_key] = _FACTORIES[kind](key)
    return _CACHE[cache_key]


def to_rgb(image) -> Any:
    from PIL import Image as PILImage

    if isinstance(image, bytes | bytearray):
        image = PILImage.open(io.BytesIO(image))
    elif isinstance(image, str | Path):
        image = PILImage.open(image)
    return image.convert("RGB")


class OpenClipBackbone(Backbone):
    @classmethod
    def build(cls, key: str, *, device: str | None = None) -> OpenClipBackbone:
        import torch

        from .threads import thread_count

        _, model_name, tag = parse_key(key)
        if tag:
            hub_reachable()  # before open_clip imports huggingface_hub
        register_configs()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu":
            torch.set_num_threads(thread_count())
        model, preprocess, warning = _load(key, model_name, tag)
        model.eval().to(device)
        return cls(
            key=key,
            dim=int(model.visual.output_dim),
            weights_loaded=not warning,
            warning=warning,
            device=device,
            prep_threads=_prep_threads(device),
            _model=model,
            _preprocess=preprocess,
        )

    def pixels(self, images: list):
        """Decode and preprocess a batch into one tensor, in the images' order.
        On a GPU one CPU thread doing this is the bottleneck, so the batch is spread
        over ``prep_threads`` threads (PIL and torch release the GIL while they
        decode, resize and normalise); on the CPU torch's own threads have the cores."""
        import torch

        def prep(im):
            return self._preprocess(to_rgb(im))

        if self.prep_threads > 1 and len(images) > 1:
            with ThreadPoolExecutor(max_workers=self.prep_threads) as pool:
                return torch.stack(list(pool.map(prep, images)))
        return torch.stack([prep(im) for im in images])

    def embed(self, images: list) -> np.ndarray:
        return self.encode(self.pixels(images).to(self.device))

    def encode(self, batch) -> np.ndarray:
        """Embeddings of a preprocessed batch already on the device (the pixel
        cache, ``rewardmodel.preprocess``, makes such batches without PIL)."""
        import torch

        with torch.inference_mode():
            if self.device.startswith("cuda"):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    feats = self._model.encode_image(batch)
            else:
                feats = self._model.encode_image(batch)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32)


def _prep_threads(device: str) -> int:
    """Preprocessing threads: the CPUs this process may use (at most 16) when the
    model runs on an accelerator, else one."""
    if device == "cpu":
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(16, cpus))


def _load(key: str, model_name: str, tag: str):
    """(model, preprocess, warning); warning empty when pretrained weights loaded."""
    import open_clip

    if tag:
        from . import conf

        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=tag, cache_dir=conf.weights_cache_dir()
            )
            return model, preprocess, ""
        except Exception as exc:  # download/file errors surface as RuntimeError etc.
            if model_name not in open_clip.list_models():
                raise
            warning = (
                f"PRETRAINED WEIGHTS NOT LOADED for {model_name}:{tag} ({exc}). "
                "Falling back to RANDOM weights (seeded from the backbone name): "
                "embeddings carry no learned meaning."
            )
    else:
        warning = (
            f"Backbone {model_name} has no pretrained tag: RANDOM weights seeded "
            "from its name (fine for tests and speed checks, meaningless for real use)."
        )
    logger.warning(warning)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(name_seed(key))
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None
        )
    return model, preprocess, warning
