"""The benchmarks' "oracle features" diagnostic (not a product backbone)."""

import numpy as np
import pytest

from benchmarks import oracle_features
from rewardmodel import backbones
from tests.factories import png_bytes

oracle_features.register()


@pytest.mark.parametrize("key, dim", [("pixelstats:v1", 113), ("pixelstats:v2", 197)])
def test_pixelstats_backbone_is_deterministic_and_normalised(key, dim):
    # The dimensions are documented in docs/rewardmodel.md; a change needs a new
    # version, since embeddings are cached per backbone name.
    bb = backbones.get_backbone(key)
    assert bb.dim == dim
    a = bb.embed([png_bytes(5, size=(64, 64))])
    b = bb.embed([png_bytes(5, size=(64, 64))])
    assert np.array_equal(a, b)
    assert a.shape == (1, dim)
    assert np.all(np.isfinite(a))
    assert np.isclose(np.linalg.norm(a), 1.0, atol=1e-5)


def test_pixelstats_v2_is_deterministic_on_busy_and_flat_images():
    from generation.backends.procedural import render

    busy, _ = render(
        prompt="a city intricate detailed grainy", seed=3, width=128, height=128
    )
    flat = png_bytes(0, size=(128, 128))
    bb = backbones.get_backbone("pixelstats:v2")
    a = bb.embed([busy, flat])
    assert np.array_equal(a, bb.embed([busy, flat]))
    assert np.all(np.isfinite(a))
    assert not np.allclose(a[0], a[1])


def test_pixelstats_unknown_version_is_rejected():
    with pytest.raises(ValueError, match="pixelstats versions"):
        backbones.get_backbone("pixelstats:v9")
