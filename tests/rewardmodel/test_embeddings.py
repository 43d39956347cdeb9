import numpy as np
import open_clip
import pytest

from annotation import services as ann
from rewardmodel import backbones, embeddings
from rewardmodel.models import Embedding
from tests.factories import StudyFactory, png_bytes

from .conftest import TINY

pytestmark = pytest.mark.django_db


def test_tiny_config_runs_the_real_open_clip_path():
    bb = backbones.get_backbone(TINY)
    # Registered from JSON through open_clip's own registry, built by
    # create_model_and_transforms: a real open_clip CLIP with random weights.
    assert "palate-tiny-vit" in open_clip.list_models()
    assert isinstance(bb._model, open_clip.model.CLIP)
    assert bb._model.visual.image_size == (64, 64)
    assert bb.dim == 32 and bb.weights_loaded is False
    assert "RANDOM" in bb.warning
    vecs = bb.embed([png_bytes(1, size=(40, 30)), png_bytes(2)])
    assert vecs.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vecs[0], vecs[1])


def test_unloadable_pretrained_weights_fall_back_to_random_loudly(caplog):
    key = "open_clip:palate-tiny-vit:/nonexistent/weights.bin"
    backbones._CACHE.pop(f"{key}@auto", None)
    with caplog.at_level("WARNING", logger="rewardmodel.backbones"):
        bb = backbones.get_backbone(key)
    assert any(
        r.levelname == "WARNING" and "PRETRAINED WEIGHTS NOT LOADED" in r.getMessage()
        for r in caplog.records
    )
    assert bb.weights_loaded is False
    assert "PRETRAINED WEIGHTS NOT LOADED" in bb.warning
    assert bb.embed([png_bytes(3)]).shape == (1, 32)


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


def test_embedding_cache_is_incremental_and_idempotent(settings, tmp_path):
    study = StudyFactory()
    images = [
        ann.image_create(study=study, data=png_bytes(700 + i), filename=f"{i}.png")
        for i in range(5)
    ]
    first = embeddings.embeddings_compute(
        backbone=TINY, image_ids=[i.pk for i in images[:3]], batch_size=2
    )
    assert first["computed"] == 3
    stored = {e.image_id: bytes(e.vector) for e in Embedding.objects.all()}
    assert all(len(v) == 32 * 2 for v in stored.values())  # float16

    again = embeddings.embeddings_compute(
        backbone=TINY, image_ids=[i.pk for i in images[:3]]
    )
    assert again["computed"] == 0 and again["weights_loaded"] is None

    more = embeddings.embeddings_compute(
        backbone=TINY, image_ids=[i.pk for i in images]
    )
    assert more["computed"] == 2
    assert Embedding.objects.filter(backbone=TINY).count() == 5
    # Cached rows were not recomputed or rewritten.
    for e in Embedding.objects.filter(image_id__in=stored):
        assert bytes(e.vector) == stored[e.image_id]
    # Another backbone is a separate cache entry for the same image.
    embeddings.embeddings_compute(backbone="pixelstats:v1", image_ids=[images[0].pk])
    assert Embedding.objects.filter(image=images[0]).count() == 2
    mat = embeddings.embedding_matrix(
        backbone=TINY, image_ids=[images[4].pk, images[0].pk]
    )
    assert mat.shape == (2, 32)
    assert np.allclose(np.linalg.norm(mat, axis=1), 1.0, atol=2e-3)
    with pytest.raises(KeyError):
        embeddings.embedding_matrix(backbone="pixelstats:v1", image_ids=[images[1].pk])


def test_unique_constraint_refuses_a_second_embedding_of_the_same_pair():
    from django.db import IntegrityError, transaction

    study = StudyFactory()
    image = ann.image_create(study=study, data=png_bytes(901), filename="a.png")
    Embedding.objects.create(
        image=image, backbone="x", dim=1, vector=b"\0\0", weights_loaded=True
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Embedding.objects.create(
            image=image, backbone="x", dim=1, vector=b"\0\0", weights_loaded=True
        )
