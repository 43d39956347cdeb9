"""Image backbones that turn pixels into L2-normalised embeddings.

A backbone is named by a key: ``open_clip:<model>:<pretrained tag>`` (the real path,
``open_clip.create_model_and_transforms``) or ``pixelstats:v1`` (a deterministic,
non-learned colour/structure feature extractor for offline benchmarks). torch and
open_clip are imported inside the functions: this module is safe to import anywhere.

When the configured pretrained weights cannot be loaded (no network, no file), the
open_clip backbone builds the same architecture with random weights and says so
loudly: a WARNING in the log, ``weights_loaded=False`` and ``warning`` on the
backbone, which the training run copies onto its ModelVersion.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    _model: Any = field(default=None, repr=False)
    _preprocess: Any = field(default=None, repr=False)

    def embed(self, images: list) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def parse_key(key: str) -> tuple[str, str, str]:
    parts = key.split(":")
    kind = parts[0]
    if kind == "open_clip":
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError(f"Backbone '{key}': use open_clip:<model>[:<pretrained>]")
        return kind, parts[1], parts[2] if len(parts) == 3 else ""
    if kind == "pixelstats":
        return kind, parts[1] if len(parts) > 1 else "v1", ""
    raise ValueError(f"Unknown backbone '{key}' (open_clip:... or pixelstats:v1)")


def register_configs() -> None:
    """Make the JSON configs shipped here (e.g. ``palate-tiny-vit``) known to
    open_clip, through its public ``add_model_config``."""
    import open_clip

    if "palate-tiny-vit" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def get_backbone(key: str, *, device: str | None = None) -> Backbone:
    """The backbone for a key, built once per process."""
    cache_key = f"{key}@{device or 'auto'}"
    if cache_key not in _CACHE:
        kind, _, _ = parse_key(key)
        if kind == "open_clip":
            _CACHE[cache_key] = OpenClipBackbone.build(key, device=device)
        else:
            _CACHE[cache_key] = PixelStatsBackbone(
                key=key, dim=PIXELSTATS_DIM, weights_loaded=True
            )
    return _CACHE[cache_key]


def _to_rgb(image) -> Any:
    from PIL import Image as PILImage

    if isinstance(image, bytes | bytearray):
        image = PILImage.open(io.BytesIO(image))
    elif isinstance(image, str | Path):
        image = PILImage.open(image)
    return image.convert("RGB")


class OpenClipBackbone(Backbone):
    @classmethod
    def build(cls, key: str, *, device: str | None = None) -> OpenClipBackbone:
        import open_clip
        import torch

        from . import conf

        register_configs()
        _, model_name, tag = parse_key(key)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        warning = ""
        weights_loaded = bool(tag)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=tag or None, cache_dir=conf.weights_cache_dir()
            )
        except Exception as exc:  # download/file errors surface as RuntimeError etc.
            if not tag:
                raise
            warning = (
                f"PRETRAINED WEIGHTS NOT LOADED for {model_name}:{tag} ({exc}). "
                "Falling back to RANDOM weights: embeddings carry no learned meaning."
            )
            logger.warning(warning)
            weights_loaded = False
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None
            )
        if not tag:
            warning = (
                f"Backbone {model_name} has no pretrained tag: RANDOM weights "
                "(fine for tests and speed checks, meaningless for real use)."
            )
            logger.warning(warning)
        model.eval().to(device)
        dim = int(model.visual.output_dim)
        return cls(
            key=key,
            dim=dim,
            weights_loaded=weights_loaded,
            warning=warning,
            device=device,
            _model=model,
            _preprocess=preprocess,
        )

    def embed(self, images: list) -> np.ndarray:
        import torch

        batch = torch.stack([self._preprocess(_to_rgb(im)) for im in images])
        batch = batch.to(self.device)
        with torch.inference_mode():
            if self.device.startswith("cuda"):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    feats = self._model.encode_image(batch)
            else:
                feats = self._model.encode_image(batch)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32)


# --- pixelstats: deterministic features for offline benchmarks ---------------

_PS_SIZE = 64
_HUE_BINS = 12
PIXELSTATS_DIM = 3 + 3 + 3 + _HUE_BINS + 4 + 8 + 4 + 3 + 9


def _pixelstats(image) -> np.ndarray:
    """Colour, tone, edge, symmetry and texture statistics of a 64×64 thumbnail.

    Not learned and not semantic: a stand-in that lets the offline benchmark test
    the *model* when no pretrained CLIP can be loaded. Each group is scaled to
    roughly unit range; the vector is L2-normalised by the caller after centring.
    """
    from PIL import Image as PILImage

    im = _to_rgb(image).resize((_PS_SIZE, _PS_SIZE), PILImage.Resampling.BILINEAR)
    rgb = np.asarray(im, dtype=np.float32) / 255.0
    hsv = np.asarray(im.convert("HSV"), dtype=np.float32) / 255.0
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    feats: list[float] = []
    feats += list(rgb.reshape(-1, 3).mean(0))
    feats += list(rgb.reshape(-1, 3).std(0) * 2)
    feats += [float(s.mean()), float(v.mean()), float(lum.std() * 2)]
    weights = s * v
    hist, _ = np.histogram(h, bins=_HUE_BINS, range=(0, 1), weights=weights)
    feats += list(hist / (weights.sum() + 1e-6))
    gx = np.abs(np.diff(lum, axis=1))
    gy = np.abs(np.diff(lum, axis=0))
    edges = (gx[:-1, :] + gy[:, :-1]) / 2
    feats += [
        float(edges.mean() * 8),
        float((edges > 0.05).mean()),
        float((edges > 0.15).mean()),
        float(edges.std() * 8),
    ]
    # Tone histogram of luminance.
    tone, _ = np.histogram(lum, bins=8, range=(0, 1))
    feats += list(tone / lum.size)
    # Mirror symmetry (left/right, top/bottom) and centre vs surround.
    feats += [
        1.0 - float(np.abs(lum - lum[:, ::-1]).mean() * 4),
        1.0 - float(np.abs(lum - lum[::-1, :]).mean() * 4),
        float(lum[16:48, 16:48].mean() - lum.mean()) * 4,
        float(s[16:48, 16:48].mean() - s.mean()) * 4,
    ]
    # Fine texture: residual after a 2×2 box blur, per channel.
    blur = (rgb[:-1, :-1] + rgb[1:, :-1] + rgb[:-1, 1:] + rgb[1:, 1:]) / 4
    feats += list(np.abs(rgb[:-1, :-1] - blur).reshape(-1, 3).mean(0) * 10)
    # Warm vs cool balance and chroma by tone band.
    warm = float((rgb[..., 0] - rgb[..., 2]).mean())
    feats += [warm * 2, float((rgb[..., 1] - rgb[..., 2]).mean() * 2)]
    for lo, hi in ((0, 0.33), (0.33, 0.66), (0.66, 1.01)):
        mask = (lum >= lo) & (lum < hi)
        feats.append(float(s[mask].mean()) if mask.any() else 0.0)
    feats += [float(np.percentile(lum, q)) for q in (5, 25, 75, 95)]
    out = np.asarray(feats, dtype=np.float32)
    assert out.size == PIXELSTATS_DIM, out.size
    return out


class PixelStatsBackbone(Backbone):
    def embed(self, images: list) -> np.ndarray:
        feats = np.stack([_pixelstats(im) for im in images])
        # Unit length like CLIP embeddings; the reward model standardises each
        # feature with training-set statistics stored in its checkpoint.
        norm = np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8
        return (feats / norm).astype(np.float32)
