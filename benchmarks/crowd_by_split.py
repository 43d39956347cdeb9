"""The leave-one-out consensus's pairwise accuracy on every split of one
``taste_benchmark.py`` run (issue 26): where a seed falls below its best
baseline, is validation the unlucky side or test the lucky one?

The consensus needs no fit (each annotator's ratings ranked by the plain mean
of the other raters' normalised ratings of the image: ``Crowd.others_mean``,
the baseline's own definition), so its accuracy on the train images is as
honest as on validation or test, with 6-7x their images. Ratings are
normalised by each annotator's mean and spread over all their ratings (the
product uses the fit ratings'), on the benchmark's own data
(``taste_benchmark.simulate``: same simulator, seed and stored splits).

    python benchmarks/crowd_by_split.py --variant noisy_idiosyncratic \
        --seeds 157484 572980 --images 800 --annotators 150
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import taste_benchmark as tb  # sets up Django

from rewardmodel.crowd import Crowd
from rewardmodel.evaluation import CODES
from rewardmodel.metrics import mean_pairwise
from rewardmodel.taste import Ratings, normalised


def by_split(v: dict, backbone: str, seed: int, cache: Path) -> list[tuple]:
    """(split, ratings, images, the consensus's mean pairwise accuracy)."""
    n = int(v["images"])
    if backbone == "synthetic":
        space, domains = tb.synthetic_embeddings(n, seed)
    else:  # tiny-clip and generic rate on the generic taste space (as main())
        blobs, domains = tb.procedural_images(n, cache)
        space = tb.whiten(np.stack([tb.generic_features(b) for b in blobs]))
    sim = tb.simulate(v, space, domains, seed)
    r = Ratings(sim.rows, sim.anns, sim.scores.astype(np.float64))
    cnt = np.bincount(r.ann)
    mean = np.bincount(r.ann, r.score) / cnt
    std = np.sqrt(np.bincount(r.ann, (r.score - mean[r.ann]) ** 2) / cnt)
    z = normalised(r, mean, np.where(std > 0, std, 1.0))
    cons = Crowd.build(r, z, n).others_mean(r)
    out = []
    for name, code in CODES.items():
        m = sim.split == code
        if m.any():
            acc = mean_pairwise(r.ann[m], r.score[m], cons[m])
            out.append((name, int(m.sum()), np.unique(r.row[m]).size, acc))
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
