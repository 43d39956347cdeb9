"""The pixel cache (``rewardmodel.preprocess``): each image decoded and resized
once per backbone input size, the model fed the very tensor open_clip's own
preprocessing makes."""

import numpy as np
import pytest
import torch

from annotation import services as ann
from rewardmodel import backbones, embeddings, preprocess
from rewardmodel.models import Embedding
from tests.factories import StudyFactory, png_bytes

from .conftest import TINY

pytestmark = pytest.mark.django_db


def test_cached_pixels_make_the_same_tensor_as_open_clips_preprocess(rm_settings):
    bb = backbones.get_backbone(TINY)
    split = preprocess.split_preprocess(bb._preprocess)
    assert split is not None and len(split.spec) == 16
    images = [png_bytes(i, size=(40 + 7 * i, 30 + 3 * i)) for i in range(6)]
    items = [(f"{i:064x}", lambda d=d: d) for i, d in enumerate(images)]
    first = preprocess.pixels(split, items, threads=1)  # decoded and stored
    again = preprocess.pixels(split, items, threads=3)  # read from the cache
    assert first.dtype == np.uint8 and first.shape == (6, 64, 64, 3)
    assert (first == again).all()
    reference = bb.pixels(images)  # PIL -> Resize -> Crop -> ToTensor -> Normalize
    assert torch.equal(preprocess.to_input(split, again, "cpu"), reference)


def test_an_image_is_decoded_once_then_read_from_the_cache(rm_settings):
    study = StudyFactory()
    images = [
        ann.image_create(study=study, data=png_bytes(900 + i), filename=f"{i}.png")
        for i in range(5)
    ]
    ids = [im.pk for im in images]
    embeddings.embeddings_compute(backbone=TINY, image_ids=ids, batch_size=2)
    first = embeddings.embedding_matrix(backbone=TINY, image_ids=ids)
    spec = preprocess.split_preprocess(backbones.get_backbone(TINY)._preprocess).spec
    cached = sorted(p.stem for p in preprocess.pixels_dir(spec).rglob("*.npy"))
    assert cached == sorted(im.sha256 for im in images)
    # Without the image files, embedding again can only come from the cache.
    for im in images:
        im.file.storage.delete(im.file.name)
    Embedding.objects.all().delete()
    embeddings.embeddings_compute(backbone=TINY, image_ids=ids, batch_size=3)
    assert np.array_equal(
        embeddings.embedding_matrix(backbone=TINY, image_ids=ids), first
    )


def test_the_cached_path_embeds_as_the_per_image_path(rm_settings):
    study = StudyFactory()
    images = [
        ann.image_create(study=study, data=png_bytes(950 + i), filename=f"{i}.png")
        for i in range(4)
    ]
    embeddings.embeddings_compute(backbone=TINY, image_ids=[im.pk for im in images])
    per_image = backbones.get_backbone(TINY).embed(
        [im.file.open("rb").read() for im in images]
    )
    for im, vec in zip(images, per_image, strict=True):
        stored = Embedding.objects.get(image=im, backbone=TINY).vector
        assert bytes(stored) == embeddings.to_blob(vec)


def test_prepare_ahead_fills_the_cache_over_processes(rm_settings):
    study = StudyFactory()
    images = [
        ann.image_create(study=study, data=png_bytes(980 + i), filename=f"{i}.png")
        for i in range(6)
    ]
    assert preprocess.pixels_prepare(backbone=TINY, images=images, processes=2) == 6
    assert preprocess.pixels_prepare(backbone=TINY, images=images, processes=2) == 0
    spec = preprocess.split_preprocess(backbones.get_backbone(TINY)._preprocess).spec
    assert len(list(preprocess.pixels_dir(spec).rglob("*.npy"))) == 6


def test_a_pipeline_without_to_tensor_keeps_the_per_image_path():
    from torchvision.transforms import CenterCrop, Compose, Resize

    assert preprocess.split_preprocess(Compose([Resize(8), CenterCrop(8)])) is None
    assert preprocess.split_preprocess(None) is None
