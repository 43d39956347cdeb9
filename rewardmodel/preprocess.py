"""Decode and resize each image once per backbone input size (issue 29).

open_clip's preprocessing is a geometric part on a PIL image (resize, centre
crop, RGB) followed by ``ToTensor`` and ``Normalize``. The geometric part is what
costs: decoding a PNG and resizing it with a bicubic filter on the CPU, which on
a GPU held the end-to-end path to a fifth of the model's speed. Its output is a
small uint8 array (224 x 224 x 3 = 147 KiB for ViT-B-32 and ViT-L-14), the same
for every backbone with the same geometric transforms.

So the pixel cache keeps that array per (image, geometric transforms) on disk
(``<REWARDMODEL_DIR>/pixels/<spec>/<sha[:2]>/<sha>.npy``), written the first time
an image is prepared. An embedding reads the arrays, stacks them and does
``ToTensor`` + ``Normalize`` on the model's device: the same operations in the
same order as torchvision's, so the input tensor is the one the original
pipeline makes (``tests/rewardmodel/test_preprocess.py``). While the model runs
one batch, a thread reads the next one. ``pixels_prepare`` fills the cache ahead
of time (at intake, or before a large embedding job) over worker processes.

Backbones whose preprocessing does not have this shape (a registered benchmark
extractor, a transform without ``ToTensor``) keep the per-image path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENV_OFF = "REWARDMODEL_PIXEL_CACHE"  # "0" turns the cache off (before/after runs)


@dataclass(frozen=True)
class Split:
    """A preprocessing pipeline as (geometric part, mean, std, spec)."""

    geometric: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spec: str  # names the geometric transforms: the cache's folder


def _name(t) -> str:
    text = getattr(t, "__name__", None) or repr(t)
    return type(t).__name__ if " at 0x" in text else text


def split_preprocess(preprocess) -> Split | None:
    """The geometric part before ``ToTensor`` and the ``Normalize`` after it, or
    None when the pipeline is not (geometric…, ToTensor, Normalize)."""
    steps = list(getattr(preprocess, "transforms", []))
    names = [type(t).__name__ for t in steps]
    at = next((i for i, n in enumerate(names) if n.endswith("ToTensor")), None)
    if at is None or names[at + 1 :] != ["Normalize"]:
        return None
    from torchvision.transforms import Compose

    norm = steps[-1]
    spec_text = "|".join(_name(t) for t in steps[:at])
    spec = hashlib.sha256(spec_text.encode()).hexdigest()[:16]
    return Split(
        Compose(steps[:at]),
        tuple(float(x) for x in norm.mean),
        tuple(float(x) for x in norm.std),
        spec,
    )


def cache_enabled() -> bool:
    return os.environ.get(ENV_OFF, "1") != "0"


def pixels_dir(spec: str) -> Path:
    from . import conf

    return conf.data_dir() / "pixels" / spec


def _path(spec: str, sha256: str) -> Path:
    return pixels_dir(spec) / sha256[:2] / f"{sha256}.npy"


def decode(geometric, data) -> np.ndarray:
    """Bytes or a path -> the geometric transforms' uint8 H x W x 3 array."""
    from .backbones import to_rgb

    if isinstance(data, str | Path):
        data = Path(data).read_bytes()
    return np.asarray(geometric(to_rgb(bytes(data))), dtype=np.uint8)


def _store(path: Path, array: np.ndarray) -> None:
    """Atomically (a reader never sees half a file; racing writers agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def _load(path: Path) -> np.ndarray | None:
    try:
        with path.open("rb") as fh:
            return np.load(fh, allow_pickle=False)
    except (OSError, ValueError):
        return None  # absent or torn: decode again


def pixels(split: Split, items: list[tuple[str, Callable[[], bytes]]], threads: int):
    """uint8 N x H x W x 3 for ``items`` = (sha256, read bytes); misses are
    decoded (over ``threads`` threads) and stored."""

    def one(item):
        sha, read = item
        path = _path(split.spec, sha)
        array = _load(path) if cache_enabled() else None
        if array is None:
            array = decode(split.geometric, read())
            if cache_enabled():
                _store(path, array)
        return array

    if threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return np.stack(list(pool.map(one, items)))
    return np.stack([one(it) for it in items])


def to_input(split: Split, batch: np.ndarray, device: str):
    """``ToTensor`` + ``Normalize`` of a uint8 N x H x W x 3 batch, on ``device``:
    torchvision's operations in its order (permute, float, / 255, - mean, / std)."""
    import torch

    x = torch.from_numpy(batch)
    if device != "cpu":
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).contiguous().to(dtype=torch.float32).div(255)
    mean = torch.as_tensor(split.mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(split.std, dtype=x.dtype, device=x.device)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def cached_batches(bb) -> Callable[[list[list]], Iterator[tuple]] | None:
    """For an open_clip backbone, ``run(chunks)`` yielding ``(chunk, vectors)``
    through the pixel cache (chunks of rows with ``sha256`` and ``file``), the next
    chunk's pixels read by a thread while the model runs this one; None where the
    cache does not apply (the caller keeps the per-image path)."""
    split = split_preprocess(getattr(bb, "_preprocess", None))
    if split is None or not hasattr(bb, "encode"):
        return None
    threads = max(1, getattr(bb, "prep_threads", 1))

    def load(chunk: list) -> np.ndarray:
        return pixels(split, [(im.sha256, _reader(im)) for im in chunk], threads)

    def run(chunks: list[list]) -> Iterator[tuple]:
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=1) as ahead:
            coming = ahead.submit(load, chunks[0])
            for k, chunk in enumerate(chunks):
                batch = coming.result()
                if k + 1 < len(chunks):
                    coming = ahead.submit(load, chunks[k + 1])
                yield chunk, bb.encode(to_input(split, batch, bb.device))

    return run


def _reader(image) -> Callable[[], bytes]:
    def read() -> bytes:
        with image.file.open("rb") as fh:
            return fh.read()

    return read


def _prepare_one(args) -> bool:
    spec, geometric, sha, path = args
    target = _path(spec, sha)
    if target.exists():
        return False
    _store(target, decode(geometric, path))
    return True


def pixels_prepare(*, backbone: str, images: Iterable, processes: int = 0) -> int:
    """Fill the pixel cache for ``images`` (rows with ``sha256`` and ``file``)
    ahead of embedding, over worker processes (decoding holds the GIL in parts,
    threads did 444 images/s on 16 cores); returns how many were decoded."""
    from .backbones import get_backbone

    split = split_preprocess(getattr(get_backbone(backbone), "_preprocess", None))
    if split is None or not cache_enabled():
        return 0
    jobs = [(split.spec, split.geometric, im.sha256, im.file.path) for im in images]
    processes = processes or min(16, len(os.sched_getaffinity(0)))
    if processes <= 1 or len(jobs) < 2 * processes:
        return sum(map(_prepare_one, jobs))
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return sum(pool.map(_prepare_one, jobs, chunksize=16))
