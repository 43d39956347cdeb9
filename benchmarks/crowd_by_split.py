"""The leave-one-out consensus's pairwise accuracy on every split of one
``taste_benchmark.py`` run (issue 26): where a seed falls below its best
baseline, is validation the unlucky side or test the lucky one?

The consensus needs no fit (each annotator's ratings ranked by the mean of the
other raters' z-scored ratings of the image), so its accuracy on the train
images is as honest as on validation or test, with 6-7x their images. The
product's crowd feature divides by count + 1 instead of count, which ranks the
same among the raters of an image. The ratings are the benchmark's own (same
simulator, same seed, same stored splits).

    python benchmarks/crowd_by_split.py --variant noisy_idiosyncratic \
        --seeds 157484 572980 --images 800 --annotators 150
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import taste_benchmark as tb  # sets up Django

from rewardmodel.metrics import mean_pairwise


def loo_consensus(rows, anns, scores) -> np.ndarray:
    """Each rating's image: the mean z-score of its other raters."""
    s = np.asarray(scores, np.float64)
    n = np.bincount(anns)
    mu = np.bincount(anns, s) / n
    sd = np.sqrt(np.bincount(anns, (s - mu[anns]) ** 2) / n)
    z = (s - mu[anns]) / np.where(sd > 0, sd, 1.0)[anns]
    tot, cnt = np.bincount(rows, z), np.bincount(rows)
    return (tot[rows] - z) / np.maximum(cnt[rows] - 1, 1)


def by_split(v: dict, backbone: str, seed: int, cache: Path) -> list[tuple]:
    n = int(v["images"])
    if backbone == "synthetic":
        space, domains = tb.synthetic_embeddings(n, seed)
    else:  # tiny-clip and generic rate on the generic taste space
        blobs, domains = tb.procedural_images(n, cache)
        space = tb.whiten(np.stack([tb.generic_features(b) for b in blobs]))
    util, _, _ = tb.utilities(v, space, domains, seed)
    noise = tb.calibrate_noise(v, util, seed)
    rows, anns, scores = tb.draw_ratings(v, util, noise, seed)
    study = 10_000 + seed  # as run_one keys them
    split = np.asarray(
        [
            tb.split_assign(image_key=f"{study}:{r}", annotator_key=f"{study}:{a}")
            for r, a in zip(rows, anns, strict=True)
        ]
    )
    cons = loo_consensus(rows, anns, scores)
    out = []
    for name in ("train", "val_seen", "val_unseen", "test_seen", "test_unseen"):
        m = split == name
        if m.any():
            acc = mean_pairwise(anns[m], scores[m].astype(np.float64), cons[m])
            out.append((name, int(m.sum()), np.unique(rows[m]).size, acc))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", required=True)
    p.add_argument("--backbone", default="tiny-clip")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--images", type=int)
    p.add_argument("--annotators", type=int)
    p.add_argument("--cache", default="/tmp/palate-taste-bench")
    args = p.parse_args()
    v = tb.variants_load([args.variant])[args.variant]
    if args.images:
        v = {**v, "images": args.images, "annotators": args.annotators or 0}
    print("| seed | split | ratings | images | LOO consensus, mean pairwise |")
    print("| --- | --- | --- | --- | --- |")
    for seed in args.seeds:
        for name, n, imgs, acc in by_split(v, args.backbone, seed, Path(args.cache)):
            print(f"| {seed} | {name} | {n} | {imgs} | {acc:.4f} |")
    print(f"crowd_by_split: {len(args.seeds)} seed(s) of {args.variant}")


if __name__ == "__main__":
    main()
