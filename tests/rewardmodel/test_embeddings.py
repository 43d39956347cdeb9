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
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setattr(backbones, "_HUB", {})
    with caplog.at_level("WARNING", logger="rewardmodel.backbones"):
        assert backbones.hub_reachable() is False
        assert backbones.hub_reachable() is False
    import os

    import huggingface_hub.constants

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    # huggingface_hub was imported before the decision: its own flag is set too.
    assert huggingface_hub.constants.is_offline_mode()
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
    assert "127.0.0.1:9" in backbones.hub_status()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


# Runs in a fresh process (the decision is per process): every connection attempt
# is recorded by an audit hook (the interpreter's own "socket.connect" event).
OFFLINE_SCRIPT = """
import json, os, sys
attempts = []
sys.addaudithook(
    lambda event, args: attempts.append(str(args[1])) if event == "socket.connect"
    else None
)
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
import django
django.setup()
from rewardmodel import backbones
first = backbones.get_backbone("open_clip:ViT-B-32:laion2b_s34b_b79k")
import huggingface_hub.constants
after_first = list(attempts)
second = backbones.get_backbone("open_clip:ViT-B-32:laion2b_s34b_b79k", device="cpu")
print(json.dumps({
    "after_first": after_first,
    "after_second": attempts,
    "offline": huggingface_hub.constants.is_offline_mode(),
    "weights": [first.weights_loaded, second.weights_loaded],
}))
"""


def test_an_offline_worker_tries_the_hub_once_and_never_again(tmp_path):
    """Offline (the hub's address refuses connections, on 127.0.0.1), loading a
    backbone with a pretrained tag makes one connection attempt, the check, and
    none for the weights (huggingface_hub is told before it is asked); a second
    load in the same process makes none at all."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from django.conf import settings

    with socket.socket() as s:  # a free port, then closed: connections refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
        PALATE_RM_WEIGHTS_DIR=str(tmp_path / "weights"),
        HF_HOME=str(tmp_path / "hf"),
    )
    out = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["after_first"] == [f"('127.0.0.1', {port})"], got
    assert got["after_second"] == got["after_first"], got
    assert got["offline"] and got["weights"] == [False, False]


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
