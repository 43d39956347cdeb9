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
