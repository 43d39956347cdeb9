"""Paired comparison of two ``taste_benchmark.py --raw`` files run on the same
seeds (e.g. this branch with ``--paired`` against main's code): for every
variant × backbone, the model's seen-annotator accuracies side by side, how
many (seed, annotator) values are bit-identical, the mean paired difference
with its 95 % interval, and seeds better / same (±0.001) / worse.

    python benchmarks/compare_raw.py A.json[:rows|rows_off] B.json[:rows|rows_off]
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

TIE = 0.001


def _load(arg: str) -> tuple[dict, str]:
    path, _, key = arg.partition(":")
    with open(path) as fh:
        return json.load(fh), key or "rows"


def _seen(rows: list) -> dict:
    return {
        r["annotator"]: r["model"]["pairwise_accuracy"]
        for r in rows
        if r["split"] == "seen" and r["model"]["pairwise_accuracy"] is not None
    }


def main() -> None:
    (a, ka), (b, kb) = _load(sys.argv[1]), _load(sys.argv[2])
    print(
        f"| cell | seeds | identical values | {ka} A − {kb} B [95 % CI] | "
        "seeds better / same / worse |\n| --- | --- | --- | --- | --- |"
    )
    pooled, pooled_same, pooled_seeds = [], 0, []
    for cell in a:
        if cell not in b or a[cell]["seeds"] != b[cell]["seeds"]:
            print(f"| {cell} | seeds differ or missing | | | |")
            continue
        diffs, same, per_seed = [], 0, []
        for ra, rb in zip(a[cell][ka], b[cell][kb], strict=True):
            sa, sb = _seen(ra), _seen(rb)
            d = [sa[k] - sb[k] for k in sa if k in sb]
            same += sum(sa[k] == sb[k] for k in sa if k in sb)
            diffs += d
            per_seed.append(float(np.mean(d)) if d else 0.0)
        _row(cell, per_seed, same, diffs)
        pooled += diffs
        pooled_same += same
        pooled_seeds += per_seed
    if pooled:  # every cell's (seed, annotator) differences together
        _row("pooled", pooled_seeds, pooled_same, pooled)


def _row(cell: str, per_seed: list, same: int, diffs: list) -> None:
    m = float(np.mean(diffs))
    h = 1.96 * float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))
    up = sum(x > TIE for x in per_seed)
    eq = sum(abs(x) <= TIE for x in per_seed)
    print(
        f"| {cell} | {len(per_seed)} | {same} of {len(diffs)} | {m:+.4f} "
        f"[{m - h:+.4f}, {m + h:+.4f}] | {up} / {eq} / {len(per_seed) - up - eq} |"
    )


if __name__ == "__main__":
    main()
