"""An offline, deterministic image generator with known ground-truth attributes.

Same prompt and seed give the same PNG bytes. Eight continuous attributes in [0, 1]
(warmth, saturation, brightness, contrast, complexity, symmetry, roundness, texture)
are drawn from the prompt's words and the seed, and each one is *visibly* applied:
palette hue, chroma, overall luminance, luminance spread, number of shapes, mirror
blend, share of round shapes and grain. The reward-model code uses them as the
"true" features a taste model can learn, so they are returned with every image.

numpy and Pillow only: this runs in the web process for the demo and in tests.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .base import Backend, GeneratedImage, GenerationRequest

VERSION = 1
ATTRIBUTES = (
    "warmth",
    "saturation",
    "brightness",
    "contrast",
    "complexity",
    "symmetry",
    "roundness",
    "texture",
)
COMPOSITIONS = ("centered", "thirds", "diagonal", "scattered", "horizon")

# Words that push an attribute up (+) or down (-), in logit units. A prompt without
# any of them still gets a prompt-specific baseline from its hash.
_LEXICON: dict[str, dict[str, float]] = {}


def _words(attr: str, sign: float, words: str) -> None:
    for word in words.split():
        _LEXICON.setdefault(word, {})[attr] = sign * 1.3


_words(
    "warmth",
    +1,
    "sunset fire desert autumn gold golden warm summer lava candle "
    "amber red orange sun sunny copper rust spice",
)
_words(
    "warmth",
    -1,
    "ice icy winter ocean sea night moon cold blue snow rain frost "
    "mist arctic teal underwater glacier",
)
_words(
    "saturation",
    +1,
    "vivid neon vibrant colorful colourful pop saturated tropical "
    "rainbow psychedelic carnival",
)
_words(
    "saturation",
    -1,
    "muted pastel faded monochrome grey gray noir vintage "
    "desaturated sepia washed dusty",
)
_words(
    "brightness",
    +1,
    "bright sunny day daylight light airy white morning luminous glowing high-key",
)
_words(
    "brightness",
    -1,
    "dark night noir shadow shadows moody gothic dusk gloomy low-key midnight",
)
_words(
    "contrast",
    +1,
    "dramatic bold chiaroscuro stark harsh graphic striking cinematic spotlight",
)
_words("contrast", -1, "soft hazy foggy misty calm dreamy gentle diffuse flat")
_words(
    "complexity",
    +1,
    "busy ornate intricate detailed crowded city baroque "
    "maximal maximalist market festival jungle pattern",
)
_words(
    "complexity",
    -1,
    "minimal minimalist simple clean empty zen sparse lone single quiet",
)
_words(
    "symmetry",
    +1,
    "symmetric symmetrical mandala architecture portrait formal "
    "cathedral mirror reflection temple",
)
_words("symmetry", -1, "chaotic organic wild abstract candid messy asymmetric dynamic")
_words(
    "roundness",
    +1,
    "round rounded soft bubble bubbles circle circles flower "
    "flowers curve curvy fluid balloon pebble",
)
_words(
    "roundness",
    -1,
    "sharp angular geometric crystal cubist brutalist edgy "
    "jagged shard triangle triangles",
)
_words(
    "texture",
    +1,
    "rough grainy textured film gritty canvas stone fur wool "
    "weathered painterly sketch",
)
_words("texture", -1, "smooth glossy sleek glass polished digital vector chrome satin")


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def normalize_prompt(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def attributes_for(*, prompt: str, seed: int) -> tuple[dict[str, float], list[str]]:
    """The attribute values an image will have, and the lexicon words that moved them.

    Logit = prompt baseline (hash of the prompt) + keyword nudges + seed noise, so the
    prompt sets the tendency and the seed spreads the images around it.
    """
    norm = normalize_prompt(prompt)
    prompt_rng = _rng("prompt", VERSION, norm)
    seed_rng = _rng("seed", VERSION, norm, seed)
    tokens = re.findall(r"[a-z][a-z\-]*", norm)
    hits = [t for t in dict.fromkeys(tokens) if t in _LEXICON]
    baseline = prompt_rng.normal(0.0, 0.5, len(ATTRIBUTES))
    noise = seed_rng.normal(0.0, 1.1, len(ATTRIBUTES))
    attrs = {}
    for i, name in enumerate(ATTRIBUTES):
        nudge = sum(_LEXICON[t].get(name, 0.0) for t in hits)
        attrs[name] = round(_sigmoid(baseline[i] + nudge + noise[i]), 4)
    return attrs, hits


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _palette(a: dict[str, float], rng: np.random.Generator) -> tuple[list, str]:
    # Warm hues sit around red-orange-yellow (0.0-0.12), cool ones around
    # cyan-blue-violet (0.5-0.7); warmth interpolates between the two.
    base_hue = 0.60 - 0.55 * a["warmth"] + rng.normal(0, 0.03)
    harmony = str(rng.choice(["analogous", "accent", "triad-soft"]))
    offsets = {
        "analogous": [0.0, 0.04, -0.04, 0.08, -0.02],
        "accent": [0.0, 0.03, -0.03, 0.05, 0.5],
        "triad-soft": [0.0, 0.06, -0.06, 0.33, -0.33],
    }[harmony]
    sat = 0.05 + 0.9 * a["saturation"]
    colors = []
    for i, off in enumerate(offsets):
        # Accent hues are weaker so they do not overturn the warmth reading.
        s = sat * (0.55 if abs(off) > 0.2 else 1.0) * rng.uniform(0.85, 1.0)
        spread = (i / (len(offsets) - 1) - 0.5) * (0.2 + 0.75 * a["contrast"])
        v = 0.2 + 0.6 * a["brightness"] + spread + rng.normal(0, 0.03)
        colors.append(_hsv(base_hue + off + rng.normal(0, 0.01), s, v))
    order = rng.permutation(len(colors))
    return [colors[i] for i in order], harmony


def _focal_points(kind: str, rng: np.random.Generator, w: int, h: int) -> list:
    if kind == "centered":
        return [(w * 0.5, h * 0.5)]
    if kind == "thirds":
        return [(w * rng.choice([1 / 3, 2 / 3]), h * rng.choice([1 / 3, 2 / 3]))]
    if kind == "diagonal":
        flip = rng.random() < 0.5
        return [(w * t, h * (1 - t if flip else t)) for t in (0.2, 0.5, 0.8)]
    if kind == "horizon":
        y = h * rng.uniform(0.35, 0.7)
        return [(w * x, y) for x in (0.15, 0.4, 0.65, 0.9)]
    return [(w * rng.uniform(0.1, 0.9), h * rng.uniform(0.1, 0.9)) for _ in range(5)]


def _draw_shapes(
    img: Image.Image,
    a: dict[str, float],
    colors: list,
    rng: np.random.Generator,
    composition: str,
) -> dict[str, int]:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    n = int(round(3 + a["complexity"] ** 1.2 * 60))
    focal = _focal_points(composition, rng, w, h)
    scale = min(w, h)
    spread = 0.12 + 0.35 * a["complexity"]
    kinds = {"ellipse": 0, "rounded": 0, "polygon": 0}
    for i in range(n):
        fx, fy = focal[i % len(focal)]
        cx = fx + rng.normal(0, spread) * w
        cy = fy + rng.normal(0, spread) * h
        # Shapes shrink as the scene gets busier; earlier shapes are the big ones.
        size = scale * (0.45 - 0.33 * a["complexity"]) * rng.uniform(0.4, 1.1)
        size *= 1.0 - 0.5 * i / max(n, 1)
        rx, ry = size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0)
        color = colors[int(rng.integers(1, len(colors)))]
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        u = rng.random()
        if u < a["roundness"] * 0.8:
            draw.ellipse(box, fill=color)
            kinds["ellipse"] += 1
        elif u < a["roundness"]:
            radius = int(min(rx, ry) * a["roundness"])
            draw.rounded_rectangle(box, radius=max(radius, 1), fill=color)
            kinds["rounded"] += 1
        else:
            k = int(rng.choice([3, 4, 5]))
            phase = rng.uniform(0, 2 * math.pi)
            pts = [
                (
                    cx + rx * math.cos(phase + 2 * math.pi * j / k),
                    cy + ry * math.sin(phase + 2 * math.pi * j / k),
                )
                for j in range(k)
            ]
            draw.polygon(pts, fill=color)
            kinds["polygon"] += 1
    return kinds


def _value_noise(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    grid = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    im = Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.float32)


def _background(colors, light_angle: float, width: int, height: int):
    """A gradient between the two extreme palette colours along the light
    direction, and the pixel coordinates in [-0.5, 0.5] the lighting reuses."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    xn, yn = xx / (width - 1) - 0.5, yy / (height - 1) - 0.5
    t = 0.5 + (xn * math.cos(light_angle) + yn * math.sin(light_angle))
    c0, c1 = np.array(colors[0], np.float32), np.array(colors[-1], np.float32)
    bg = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), mode="RGB")
    return img, xn, yn


def _texture_and_symmetry(arr, a: dict, rng, width: int, height: int):
    # Texture: coarse blotches plus fine grain, both scaled by the attribute.
    tex = a["texture"]
    blotch = _value_noise(rng, width, height, cells=max(4, width // 24))
    grain = rng.normal(0, 1, (height, width)).astype(np.float32)
    arr += (tex * 0.07 * blotch + tex * 0.11 * grain)[..., None]

    # Symmetry: mixing with the mirror image at weight w leaves an asymmetric
    # residue of (1 - 2w) = (1 - s)^2: exactly symmetric at s = 1, untouched at 0.
    w_mirror = (1.0 - (1.0 - a["symmetry"]) ** 2) / 2.0
    return (1 - w_mirror) * arr + w_mirror * arr[:, ::-1, :]


def _tone(arr, a: dict):
    """Contrast then brightness, measured and corrected so the attributes are
    reliably visible whatever the shapes happened to do."""
    lum = arr @ np.array([0.299, 0.587, 0.114], np.float32)
    mean, std = float(lum.mean()), float(lum.std()) + 1e-6
    target_std = 0.04 + 0.26 * a["contrast"]
    arr = mean + (arr - mean) * min(max(target_std / std, 0.3), 4.0)
    arr = np.clip(arr, 0.0, 1.0)
    lum_mean = float((arr @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
    target_mean = 0.12 + 0.76 * a["brightness"]
    gamma = math.log(target_mean) / math.log(min(max(lum_mean, 1e-3), 0.999))
    return np.power(arr, min(max(gamma, 0.25), 4.0))


def render(
    *, prompt: str, seed: int, width: int = 256, height: int = 256
) -> tuple[bytes, dict[str, Any]]:
    """Render one image. Returns PNG bytes and the attributes used.

    The dict holds ``attributes`` (the eight features in [0, 1]) and the discrete
    choices (palette, composition, lighting, shape counts, matched keywords).
    """
    if width < 8 or height < 8 or width * height > 4096 * 4096:
        raise ValueError("width and height must be at least 8 and at most 4096².")
    a, hits = attributes_for(prompt=prompt, seed=seed)
    rng = _rng("render", VERSION, normalize_prompt(prompt), seed)
    colors, harmony = _palette(a, rng)
    composition = str(rng.choice(COMPOSITIONS))

    light_angle = float(rng.uniform(0, 2 * math.pi))
    img, xn, yn = _background(colors, light_angle, width, height)

    kinds = _draw_shapes(img, a, colors, rng, composition)
    if a["roundness"] > 0.6:
        img = img.filter(ImageFilter.GaussianBlur(radius=0.6 * a["roundness"]))
    arr = np.asarray(img, dtype=np.float32) / 255.0

    # Lighting: a soft spot whose strength grows with contrast.
    lx = 0.5 + 0.35 * math.cos(light_angle + math.pi)
    ly = 0.5 + 0.35 * math.sin(light_angle + math.pi)
    dist = np.sqrt((xn + 0.5 - lx) ** 2 + (yn + 0.5 - ly) ** 2)
    light_strength = 0.15 + 0.5 * a["contrast"]
    arr *= (1.0 + light_strength * (0.6 - dist))[..., None]

    arr = _texture_and_symmetry(arr, a, rng, width, height)
    arr = _tone(arr, a)

    out = Image.fromarray((np.clip(arr, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False, compress_level=6)
    info = {
        "generator": "procedural",
        "version": VERSION,
        "seed": seed,
        "width": width,
        "height": height,
        "attributes": a,
        "keywords": hits,
        "palette": ["#{:02x}{:02x}{:02x}".format(*c) for c in colors],
        "harmony": harmony,
        "composition": composition,
        "lighting": {
            "angle_deg": round(math.degrees(light_angle), 1),
            "x": round(lx, 3),
            "y": round(ly, 3),
            "strength": round(light_strength, 3),
        },
        "shapes": kinds,
    }
    return buf.getvalue(), info


class ProceduralBackend(Backend):
    name = "procedural"
    default_model = f"procedural-v{VERSION}"
    models = (f"procedural-v{VERSION}",)
    rate_limit = None
    soft_time_limit = 30
    time_limit = 60
    max_batch = 1
    allowed_params = {"width": int, "height": int}

    def validate(self, *, model: str, params: dict[str, Any]) -> None:
        from .base import ConfigurationError

        super().validate(model=model, params=params)
        if model not in self.models:
            raise ConfigurationError(
                f"Unknown model '{model}' for backend 'procedural' "
                f"(available: {', '.join(self.models)})."
            )
        for key in ("width", "height"):
            value = params.get(key, 256)
            if not 8 <= value <= 2048:
                raise ConfigurationError(f"{key} must be between 8 and 2048.")

    def generate(self, requests: list[GenerationRequest]) -> list[GeneratedImage]:
        results = []
        for req in requests:
            data, info = render(
                prompt=req.prompt,
                seed=req.seed,
                width=int(req.param("width", 256)),
                height=int(req.param("height", 256)),
            )
            results.append(GeneratedImage(data=data, provenance={"procedural": info}))
        return results
