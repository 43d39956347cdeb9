"""The embedding cache: one float16 vector per (image, backbone), computed once.

Computation is incremental (only rows missing for this backbone are embedded) and
idempotent (rows are inserted with ``ignore_conflicts`` against the unique
constraint, so two workers racing on the same image store it once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
from django.db import transaction

from annotation.studies.models import Image

from .models import Embedding, ExternalItem

logger = logging.getLogger(__name__)


def to_blob(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype=np.float16).tobytes()


def missing_image_ids(*, backbone: str, image_ids: Iterable[int]) -> list[int]:
    ids = sorted(set(image_ids))
    have: set[int] = set()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        have.update(
            Embedding.objects.filter(backbone=backbone, image_id__in=chunk).values_list(
                "image_id", flat=True
            )
        )
    return [i for i in ids if i not in have]


def _read_image(image: Image) -> bytes:
    with image.file.open("rb") as fh:
        return fh.read()


def _embed_into_cache(
    bb,
    targets: list,
    *,
    read,
    target_field: str,
    batch_size: int,
    on_progress=None,
    batches=None,
) -> int:
    """The one embedding loop: batches of ``targets`` (images or external items)
    through the backbone into the cache. ``read(target)`` gives the backbone its
    input, unless ``batches(chunks)`` yields ``(chunk, vectors)`` itself (the
    pixel cache, ``preprocess.cached_batches``); rows are inserted with
    ``ignore_conflicts`` (racing workers store one)."""
    done, seen = 0, 0
    chunks = [targets[s : s + batch_size] for s in range(0, len(targets), batch_size)]
    if batches is None:
        batches = lambda cs: ((c, bb.embed([read(t) for t in c])) for c in cs)  # noqa: E731
    for chunk, vectors in batches(chunks):
        rows = [
            Embedding(
                **{target_field: t.pk},
                backbone=bb.key,
                dim=bb.dim,
                vector=to_blob(vec),
                weights_loaded=bb.weights_loaded,
            )
            for t, vec in zip(chunk, vectors, strict=True)
        ]
        with transaction.atomic():
            done += len(Embedding.objects.bulk_create(rows, ignore_conflicts=True))
        seen += len(chunk)
        if on_progress:
            on_progress(seen, len(targets))
    return done


def embeddings_compute(
    *,
    backbone: str,
    image_ids: Iterable[int] | None = None,
    batch_size: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Embed the images (all images when ``image_ids`` is None) that have no
    embedding for ``backbone`` yet. Returns counts and the backbone's weight status.
    ``log`` hears about a backbone load before it starts (the first load in a
    process checks the hub and reads the weights: seconds to minutes) and its
    outcome, so a training run's live log is never silent through it."""
    from . import conf
    from .preprocess import cached_batches

    if image_ids is None:
        image_ids = Image.objects.values_list("pk", flat=True)
    todo = missing_image_ids(backbone=backbone, image_ids=image_ids)
    result = {"computed": 0, "weights_loaded": None, "warning": ""}
    if not todo:
        return result
    bb = _backbone_with_log(backbone, n_images=len(todo), log=log)
    result["weights_loaded"], result["warning"] = bb.weights_loaded, bb.warning
    images = list(Image.objects.filter(pk__in=todo).order_by("pk"))
    result["computed"] = _embed_into_cache(
        bb,
        images,
        read=_read_image,
        target_field="image_id",
        batch_size=batch_size or conf.embed_batch_size(),
        on_progress=on_progress,
        batches=cached_batches(bb),
    )
    return result


def _backbone_with_log(key: str, *, n_images: int, log):
    from .backbones import backbone_loaded, get_backbone, hub_status

    if log is None or backbone_loaded(key):
        return get_backbone(key)
    log(f"loading backbone {key} to embed {n_images} images…")
    bb = get_backbone(key)
    weights = "pretrained weights" if bb.weights_loaded else "RANDOM weights"
    log(f"backbone loaded on {bb.device}: {weights}; {hub_status()}")
    return bb


def external_embeddings_compute(*, backbone: str, item_ids: Iterable[int]) -> int:
    """Embed external items that point at files (items that point at a study
    image reuse that image's embedding)."""
    from . import conf
    from .backbones import get_backbone

    items = list(
        ExternalItem.objects.filter(pk__in=list(item_ids), image__isnull=True)
        .exclude(path="")
        .exclude(embeddings__backbone=backbone)
        .order_by("pk")
    )
    if not items:
        return 0
    return _embed_into_cache(
        get_backbone(backbone),
        items,
        read=lambda it: it.path,
        target_field="external_item_id",
        batch_size=conf.embed_batch_size(),
    )


def embedding_rows(*, backbone: str, image_ids: list[int]) -> tuple[list, np.ndarray]:
    """(ids that have an embedding, their rows in that order); missing ids are
    simply absent."""
    found: dict[int, bytes] = {}
    for start in range(0, len(image_ids), 5000):
        chunk = image_ids[start : start + 5000]
        found.update(
            Embedding.objects.filter(backbone=backbone, image_id__in=chunk).values_list(
                "image_id", "vector"
            )
        )
    ids = [i for i in image_ids if i in found]
    return ids, _stack([found[i] for i in ids])


def embedding_matrix(*, backbone: str, image_ids: list[int]) -> np.ndarray:
    """Rows in the order of ``image_ids``; raises KeyError naming missing ones."""
    ids, matrix = embedding_rows(backbone=backbone, image_ids=image_ids)
    if len(ids) != len(image_ids):
        have = set(ids)
        raise KeyError([i for i in image_ids if i not in have])
    return matrix


def external_embedding_matrix(
    *, backbone: str, items: list[ExternalItem]
) -> np.ndarray:
    by_image = {it.image_id for it in items if it.image_id}
    img_vecs = dict(
        Embedding.objects.filter(backbone=backbone, image_id__in=by_image).values_list(
            "image_id", "vector"
        )
    )
    item_vecs = dict(
        Embedding.objects.filter(
            backbone=backbone, external_item_id__in=[it.pk for it in items]
        ).values_list("external_item_id", "vector")
    )
    blobs = []
    for it in items:
        blob = img_vecs.get(it.image_id) if it.image_id else item_vecs.get(it.pk)
        if blob is None:
            raise KeyError([it.pk])
        blobs.append(blob)
    return _stack(blobs)


def _stack(blobs: list) -> np.ndarray:
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    raw = b"".join(bytes(b) for b in blobs)
    return (
        np.frombuffer(raw, dtype=np.float16).reshape(len(blobs), -1).astype(np.float32)
    )
