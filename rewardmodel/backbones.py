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

_PS_SIZE = 128
_HUE_BINS = 12


def _grad(lum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    gx[:, 1:-1] = (lum[:, 2:] - lum[:, :-2]) / 2
    gy[1:-1, :] = (lum[2:, :] - lum[:-2, :]) / 2
    return gx, gy


def _box(a: np.ndarray, k: int) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(a, k // 2, mode="edge")
    return sliding_window_view(padded, (k, k)).mean(axis=(-1, -2))


def _pixelstats(image) -> np.ndarray:
    """Colour, tone, layout, edge, shape and texture statistics of a thumbnail.

    Not learned and not semantic: a documented stand-in that lets the offline
    benchmark test the *reward model* when no pretrained CLIP can be loaded. Groups:
    colour moments and hue histogram; tone histogram and percentiles; a 4×4 layout
    of luminance and saturation; edge density at three scales and the edge
    orientation histogram; structure-tensor cornerness and curvature (straight
    versus curved contours); mirror symmetry; fine-grain residual.
    """
    from PIL import Image as PILImage
    from PIL import ImageFilter

    rgb_im = _to_rgb(image).resize((_PS_SIZE, _PS_SIZE), PILImage.Resampling.BILINEAR)
    rgb = np.asarray(rgb_im, dtype=np.float32) / 255.0
    hsv = np.asarray(rgb_im.convert("HSV"), dtype=np.float32) / 255.0
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    f: list[float] = []
    f += list(rgb.reshape(-1, 3).mean(0))
    f += list(rgb.reshape(-1, 3).std(0) * 2)
    f += [float(s.mean()), float(v.mean()), float(lum.std() * 2)]
    weights = s * v
    hist, _ = np.histogram(h, bins=_HUE_BINS, range=(0, 1), weights=weights)
    f += list(hist / (weights.sum() + 1e-6))
    tone, _ = np.histogram(lum, bins=8, range=(0, 1))
    f += list(tone / lum.size)
    f += [float(np.percentile(lum, q)) for q in (5, 25, 75, 95)]
    f += [
        float((rgb[..., 0] - rgb[..., 2]).mean() * 2),
        float((rgb[..., 1] - rgb[..., 2]).mean() * 2),
    ]
    for lo, hi in ((0, 0.33), (0.33, 0.66), (0.66, 1.01)):
        mask = (lum >= lo) & (lum < hi)
        f.append(float(s[mask].mean()) if mask.any() else 0.0)
    g = _PS_SIZE // 4
    f += list(lum.reshape(4, g, 4, g).mean(axis=(1, 3)).ravel())
    f += list(s.reshape(4, g, 4, g).mean(axis=(1, 3)).ravel())
    # Edges at three scales.
    gray = PILImage.fromarray((lum * 255).astype(np.uint8))
    for size in (_PS_SIZE, _PS_SIZE // 2, _PS_SIZE // 4):
        small = (
            np.asarray(
                gray.resize((size, size), PILImage.Resampling.BILINEAR),
                dtype=np.float32,
            )
            / 255.0
        )
        mag = np.hypot(*_grad(small))
        f += [
            float(mag.mean() * 10),
            float((mag > 0.02).mean()),
            float((mag > 0.06).mean()),
        ]
    gx, gy = _grad(lum)
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    ohist, _ = np.histogram(ang, bins=8, range=(0, np.pi), weights=mag)
    ohist = ohist / (ohist.sum() + 1e-6)
    f += list(ohist) + [float(-(ohist * np.log(ohist + 1e-9)).sum())]
    # Structure tensor on smoothed luminance: ~0 along straight edges, larger at
    # corners and along curves; orientation change between neighbours = curvature.
    for blur, win in ((1.0, 5), (1.5, 7), (2.0, 9)):
        sm = (
            np.asarray(gray.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)
            / 255.0
        )
        sx, sy = _grad(sm)
        jxx, jyy, jxy = _box(sx * sx, win), _box(sy * sy, win), _box(sx * sy, win)
        tr = jxx + jyy
        det = jxx * jyy - jxy**2
        edge = tr > np.percentile(tr, 85)
        ratio = det[edge] / (tr[edge] ** 2 + 1e-12)
        f += [
            float(ratio.mean() * 4),
            float(np.percentile(ratio, 50) * 4),
            float(np.percentile(ratio, 90) * 4),
            float((ratio > 0.1).mean()),
        ]
        theta = np.arctan2(2 * jxy, jxx - jyy) / 2
        turn = np.abs(np.angle(np.exp(2j * (theta[:, 1:] - theta[:, :-1])))) / 2
        f.append(float(turn[edge[:, 1:]].mean()))
    lap = np.abs(
        4 * lum[1:-1, 1:-1]
        - lum[:-2, 1:-1]
        - lum[2:, 1:-1]
        - lum[1:-1, :-2]
        - lum[1:-1, 2:]
    )
    f += [
        float(lap.mean() / (mag.mean() + 1e-6)),
        float(np.percentile(lap, 99) / (np.percentile(mag, 99) + 1e-6)),
    ]
    f += [
        1.0 - float(np.abs(lum - lum[:, ::-1]).mean() * 4),
        1.0 - float(np.abs(lum - lum[::-1, :]).mean() * 4),
        float(lum[g:-g, g:-g].mean() - lum.mean()) * 4,
        float(s[g:-g, g:-g].mean() - s.mean()) * 4,
    ]
    blur = (rgb[:-1, :-1] + rgb[1:, :-1] + rgb[:-1, 1:] + rgb[1:, 1:]) / 4
    f += list(np.abs(rgb[:-1, :-1] - blur).reshape(-1, 3).mean(0) * 10)
    q = (rgb * 3.99).astype(np.int32)
    f.append(len(np.unique(q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2])) / 64)
    out = np.asarray(f, dtype=np.float32)
    assert out.size == PIXELSTATS_DIM, out.size
    return out


PIXELSTATS_DIM = 3 + 3 + 3 + _HUE_BINS + 8 + 4 + 2 + 3 + 32 + 9 + 9 + 15 + 2 + 4 + 3 + 1


class PixelStatsBackbone(Backbone):
    def embed(self, images: list) -> np.ndarray:
        feats = np.stack([_pixelstats(im) for im in images])
        # Unit length like CLIP embeddings; the reward model standardises each
        # feature with training-set statistics stored in its checkpoint.
        norm = np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8
        return (feats / norm).astype(np.float32)
