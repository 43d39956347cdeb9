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


def test_threaded_preprocessing_keeps_the_batch_and_its_order():
    """On a GPU the batch is preprocessed in threads: same tensor, same order."""
    bb = backbones.get_backbone(TINY)
    images = [png_bytes(i, size=(40 + i, 30)) for i in range(9)]
    assert bb.prep_threads == 1  # on the CPU torch has the cores
    serial = bb.pixels(images)
    try:
        bb.prep_threads = 4
        threaded = bb.pixels(images)
    finally:
        bb.prep_threads = 1
    assert threaded.shape == serial.shape == (9, 3, 64, 64)
    assert (threaded == serial).all()
    assert backbones._prep_threads("cuda") >= 1 and backbones._prep_threads("cpu") == 1


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


def test_random_fallback_is_seeded_from_the_backbone_name():
    """Two processes embed identically (the weights are drawn from a seed derived
    from the name), and another name draws other weights."""
    import subprocess
    import sys

    from django.conf import settings

    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings.test';"
        "import django; django.setup();"
        "from rewardmodel import backbones; from tests.factories import png_bytes;"
        "print(backbones.get_backbone('{key}').embed([png_bytes(4)]).tobytes().hex())"
    )

    def run(key):
        out = subprocess.run(
            [sys.executable, "-c", code.format(key=key)],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    assert run(TINY) == run(TINY)
    assert backbones.name_seed(TINY) != backbones.name_seed(TINY + ":x")


def test_offline_is_decided_once_and_fast(monkeypatch, caplog):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "HUB_HOST", ("127.0.0.1", 9))  # nothing listens
    monkeypatch.setattr(backbones, "_HUB_CHECKED", [])
    with caplog.at_level("WARNING", logger="rewardmodel.backbones"):
        assert backbones.hub_reachable() is False
        assert backbones.hub_reachable() is False
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1


def test_default_backbone_suits_the_machine(settings, monkeypatch):
    from rewardmodel import conf

    settings.REWARDMODEL_BACKBONE = None
    monkeypatch.delenv("PALATE_RM_BACKBONE", raising=False)
    monkeypatch.setattr(conf, "has_gpu", lambda: False)
    assert conf.backbone_key() == conf.CPU_BACKBONE
    monkeypatch.setattr(conf, "has_gpu", lambda: True)
    assert conf.backbone_key() == conf.GPU_BACKBONE


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
    other = "open_clip:palate-tiny-vit:"  # another key: another cache entry
    embeddings.embeddings_compute(backbone=other, image_ids=[images[0].pk])
    assert Embedding.objects.filter(image=images[0]).count() == 2
    mat = embeddings.embedding_matrix(
        backbone=TINY, image_ids=[images[4].pk, images[0].pk]
    )
    assert mat.shape == (2, 32)
    assert np.allclose(np.linalg.norm(mat, axis=1), 1.0, atol=2e-3)
    with pytest.raises(KeyError):
        embeddings.embedding_matrix(backbone=other, image_ids=[images[1].pk])


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
