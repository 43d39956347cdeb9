"""A small generated dataset in PAMELA's Hugging Face layout: one parquet file per
published split under ``data/``, images stored inside as ``{"bytes", "path"}``
(the hub's Image feature), one row per rating with the rater's demographics."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.factories import png_bytes

SPLITS = ["train", "val_seen", "val_unseen", "test_seen", "test_unseen"]


def pamela_fixture(root: Path, *, seed: int = 0, n_images=48, n_raters=24) -> dict:
    rng = np.random.default_rng(seed)
    images = [
        png_bytes(60_000 + seed * 1000 + i, size=(32, 32)) for i in range(n_images)
    ]
    colour = rng.normal(size=(n_images, 3))
    taste = 0.5 * rng.normal(size=3) + rng.normal(size=(n_raters, 3))
    # Published splits: 6 raters held out (3 val, 3 test); images 70/12/18 %.
    unseen = {r: ("val_unseen" if r < 3 else "test_unseen") for r in range(6)}
    img_split = ["train"] * n_images
    for i in rng.permutation(n_images)[: n_images // 3]:
        img_split[i] = "val_seen" if rng.random() < 0.4 else "test_seen"
    rows = {s: [] for s in SPLITS}
    for i in range(n_images):
        for r in rng.choice(n_raters, 10, replace=False):
            split = unseen.get(int(r), img_split[i])
            score = int(np.clip(np.rint(5.5 + 2 * colour[i] @ taste[r]), 1, 10))
            rows[split].append(
                {
                    "image": {"bytes": images[i], "path": f"img_{i:04d}.png"},
                    "participant_id": f"P{r:03d}",
                    "rating": score,
                    "age": ["18-24", "25-34", "35-44"][r % 3],
                    "gender": ["female", "male"][r % 2],
                    "nationality": ["DE", "US", "IN", "BR"][r % 4],
                    "visual_group": f"group{i % 21}",
                    "type": ["Art", "Photorealism"][i % 2],
                }
            )
    data = root / "data"
    data.mkdir(parents=True)
    for split, items in rows.items():
        table = pa.Table.from_pylist(items)
        pq.write_table(table, data / f"pamela_{split}-00000-of-00001.parquet")
    return {s: len(v) for s, v in rows.items()}


# The Hugging Face card of bethgelab/PAMELA: ratings per published split, on
# 5,077 images from 199 people.
PAMELA_SHAPE = {
    "train": 50_222,
    "val_seen": 6_551,
    "val_unseen": 926,
    "test_seen": 9_735,
    "test_unseen": 2_470,
}
PAMELA_IMAGES, PAMELA_PEOPLE = 5_077, 199
# Unseen people (3 validation, 8 test); everyone else rates seen-split images.
_UNSEEN_PEOPLE = {"val_unseen": 3, "test_unseen": 8}


def _seen_images(n_images: int) -> dict[str, np.ndarray]:
    """Images of each seen split, in proportion to its ratings."""
    total = sum(PAMELA_SHAPE[s] for s in ("train", "val_seen", "test_seen"))
    n_val = round(n_images * PAMELA_SHAPE["val_seen"] / total)
    n_test = round(n_images * PAMELA_SHAPE["test_seen"] / total)
    order = np.random.default_rng(5).permutation(n_images)
    return {
        "val_seen": order[:n_val],
        "test_seen": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }


def pamela_full_shape(root: Path, *, unreadable: tuple[int, ...] = (17,)) -> dict:
    """PAMELA's exact shape and size (``PAMELA_SHAPE``, 5,077 images, 199
    people) with 8×8 images; the images ``unreadable`` get bytes PIL cannot
    load (a PNG signature, then garbage), as the hub's viewer reports for at
    least one of PAMELA's. Returns what was written: counts per split, and per
    unreadable image its key and its ratings per split."""
    rng = np.random.default_rng(0)
    colour = rng.normal(size=(PAMELA_IMAGES, 3))
    taste = 0.5 * rng.normal(size=3) + rng.normal(size=(PAMELA_PEOPLE, 3))
    images = [png_bytes(200_000 + i, size=(8, 8)) for i in range(PAMELA_IMAGES)]
    for i in unreadable:
        images[i] = b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8
    n_unseen = sum(_UNSEEN_PEOPLE.values())
    seen_people = PAMELA_PEOPLE - n_unseen
    pairs = {s: [] for s in SPLITS}  # (image, person)
    for split, imgs in _seen_images(PAMELA_IMAGES).items():
        for j in range(PAMELA_SHAPE[split]):
            i = int(imgs[j % imgs.size])
            pairs[split].append((i, n_unseen + (i * 7 + j // imgs.size) % seen_people))
    first = 0
    for split, people in _UNSEEN_PEOPLE.items():
        for j in range(PAMELA_SHAPE[split]):
            p, k = first + j % people, j // people
            pairs[split].append(((p * 461 + k) % PAMELA_IMAGES, p))
        first += people
    data = root / "data"
    data.mkdir(parents=True)
    skipped = {s: sum(i in unreadable for i, _ in pairs[s]) for s in SPLITS}
    for split, items in pairs.items():
        img = [i for i, _ in items]
        who = [p for _, p in items]
        score = np.clip(
            np.rint(5.5 + 2 * np.einsum("ij,ij->i", colour[img], taste[who])), 1, 10
        )
        table = pa.table(
            {
                "image": [
                    {"bytes": images[i], "path": f"img_{i:05d}.png"} for i in img
                ],
                "participant_id": [f"P{p:03d}" for p in who],
                "rating": score.astype(int).tolist(),
                "age": [["18-24", "25-34", "35-44"][p % 3] for p in who],
                "visual_group": [f"group{i % 21}" for i in img],
            }
        )
        pq.write_table(table, data / f"pamela_{split}-00000-of-00001.parquet")
    return {
        "splits": {s: len(v) for s, v in pairs.items()},
        "unreadable": [f"img_{i:05d}.png" for i in unreadable],
        "unreadable_ratings": skipped,
    }
