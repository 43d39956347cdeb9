"""The procedural backend: deterministic, varied, and its attributes are visible."""

import io

import numpy as np
import pytest
from PIL import Image

from generation.backends import GenerationRequest, backend_get
from generation.backends.procedural import ATTRIBUTES, render


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_same_prompt_and_seed_give_identical_bytes():
    a, info_a = render(prompt="A golden sunset over dunes", seed=7)
    b, info_b = render(prompt="A golden sunset over dunes", seed=7)
    assert a == b
    assert info_a == info_b


def test_seed_and_prompt_change_the_image():
    base, _ = render(prompt="a quiet harbour", seed=1)
    other_seed, _ = render(prompt="a quiet harbour", seed=2)
    other_prompt, _ = render(prompt="a busy harbour", seed=1)
    assert len({base, other_seed, other_prompt}) == 3


def test_output_is_png_of_requested_size():
    data, info = render(prompt="test", seed=0, width=96, height=64)
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.size == (96, 64)
    assert info["width"] == 96 and info["height"] == 64


def test_attributes_are_numeric_in_unit_interval_and_vary_across_seeds():
    values = {name: [] for name in ATTRIBUTES}
    for seed in range(40):
        _, info = render(prompt="still life with fruit", seed=seed, width=32, height=32)
        attrs = info["attributes"]
        assert set(ATTRIBUTES) <= set(attrs)
        for name in ATTRIBUTES:
            assert 0.0 <= attrs[name] <= 1.0
            values[name].append(attrs[name])
    for name, vals in values.items():
        assert np.std(vals) > 0.1, name  # continuous spread, not a constant
        assert len(set(vals)) > 30, name


def test_prompt_words_move_the_attributes():
    def mean_attr(prompt, name):
        return np.mean(
            [
                render(prompt=prompt, seed=s, width=16, height=16)[1]["attributes"][
                    name
                ]
                for s in range(30)
            ]
        )

    warm, cold = mean_attr("warm sunset fire", "warmth"), mean_attr("ice", "warmth")
    assert warm > cold
    assert mean_attr("minimal empty zen", "complexity") < mean_attr(
        "busy ornate intricate", "complexity"
    )


def _luma(px):
    return px @ np.array([0.299, 0.587, 0.114], np.float32)


def _corr(xs, ys):
    return float(np.corrcoef(xs, ys)[0, 1])


@pytest.fixture(scope="module")
def sample():
    rows = []
    for seed in range(60):
        data, info = render(
            prompt="an abstract composition", seed=seed, width=96, height=96
        )
        rows.append((_pixels(data), info))
    return rows


def test_brightness_contrast_warmth_symmetry_texture_are_visible(sample):
    attrs = [info["attributes"] for _, info in sample]
    px = [p for p, _ in sample]
    luma = [_luma(p) for p in px]
    assert _corr([a["brightness"] for a in attrs], [m.mean() for m in luma]) > 0.8
    assert _corr([a["contrast"] for a in attrs], [m.std() for m in luma]) > 0.6
    warm = [(p[..., 0] - p[..., 2]).mean() for p in px]
    assert _corr([a["warmth"] for a in attrs], warm) > 0.5
    # Mirror difference relative to the image's own spread (contrast is separate).
    asym = [np.abs(m - m[:, ::-1]).mean() / (m.std() + 1e-6) for m in luma]
    assert _corr([a["symmetry"] for a in attrs], asym) < -0.6
    hf = [np.abs(np.diff(m, axis=1)).mean() for m in luma]
    assert _corr([a["texture"] for a in attrs], hf) > 0.4
    sat = [(p.max(axis=2) - p.min(axis=2)).mean() for p in px]
    assert _corr([a["saturation"] for a in attrs], sat) > 0.4


def test_complexity_and_roundness_drive_shapes(sample):
    attrs = [info["attributes"] for _, info in sample]
    counts = [sum(info["shapes"].values()) for _, info in sample]
    assert _corr([a["complexity"] for a in attrs], counts) > 0.9
    shapes = [info["shapes"] for _, info in sample]
    round_share = [(s["ellipse"] + s["rounded"]) / sum(s.values()) for s in shapes]
    assert _corr([a["roundness"] for a in attrs], round_share) > 0.6


def test_backend_wraps_render_and_records_provenance():
    backend = backend_get("procedural")
    [result] = backend.generate(
        [
            GenerationRequest(
                prompt="p",
                seed=3,
                model=backend.default_model,
                params={"width": 48, "height": 48},
            )
        ]
    )
    data, info = render(prompt="p", seed=3, width=48, height=48)
    assert result.data == data
    assert result.provenance["procedural"]["attributes"] == info["attributes"]
