"""Paired comparison of two ``taste_benchmark.py --raw`` files run on the same
seeds (e.g. this branch with ``--paired`` against main's code): for every
variant × backbone, the model's seen-annotator accuracies side by side, how
many (seed, annotator) values are bit-identical, the mean paired difference
with its 95 % interval, and seeds better / same (±0.001) / worse.

    python benchmarks/compare_raw.py A.json[:rows|rows_off] B.json[:rows|rows_off]

With ``--newcomers`` first: the unseen annotators instead, per variant ×
backbone: the model's mean accuracy at every k in A and in B, the paired
difference B − A over (seed, newcomer, k > 0) with its 95 % interval, and the
benchmark's two criteria (≥ the population at every k, non-decreasing in k)
in A → B.
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


def _unseen(rows: list) -> dict:
    """{k: {annotator: (model, population)}} of one run's newcomers."""
    out: dict = {}
    for r in rows:
        acc = r["model"]["pairwise_accuracy"]
        if r["split"] == "unseen" and acc is not None:
            pop = r["population"]["pairwise_accuracy"]
            out.setdefault(r["k"], {})[r["annotator"]] = (acc, pop)
    return out


def _criteria(means: list, pop: float) -> str:
    low = "yes" if min(means) >= pop - 1e-12 else "**no**"
    up = all(y >= x - 1e-12 for x, y in zip(means, means[1:], strict=False))
    return f"{low} / {'yes' if up else '**no**'}"


def newcomers(a: dict, ka: str, b: dict, kb: str) -> None:
    print(
        "| cell | k | A | B | B − A at k > 0 [95 % CI] | ≥ population / "
        "non-decreasing, A → B |\n| --- | --- | --- | --- | --- | --- |"
    )
    for cell in a:
        if cell not in b or a[cell]["seeds"] != b[cell]["seeds"]:
            print(f"| {cell} | seeds differ or missing | | | | |")
            continue
        runs = [
            (_unseen(ra), _unseen(rb))
            for ra, rb in zip(a[cell][ka], b[cell][kb], strict=True)
        ]
        ks = sorted({k for ua, _ in runs for k in ua})
        side = {0: {k: [] for k in ks}, 1: {k: [] for k in ks}}
        pop, diffs = [], []
        for ua, ub in runs:
            for k in ks:
                for who, (m, p) in ua.get(k, {}).items():
                    side[0][k].append(m)
                    pop += [p] if k == ks[0] else []
                    if who in ub.get(k, {}):
                        side[1][k].append(ub[k][who][0])
                        diffs += [ub[k][who][0] - m] if k > 0 else []
        if not diffs:  # no newcomer at k > 0 in both: nothing to compare
            print(f"| {cell} | no paired newcomers | | | | |")
            continue
        mean = [[float(np.mean(side[s][k])) for k in ks] for s in (0, 1)]
        m, h = float(np.mean(diffs)), 0.0
        if len(diffs) > 1:
            h = 1.96 * float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))
        crit = [_criteria(x, float(np.mean(pop))) for x in mean]
        print(
            f"| {cell} | {' / '.join(map(str, ks))} | "
            f"{' / '.join(f'{x:.4f}' for x in mean[0])} | "
            f"{' / '.join(f'{x:.4f}' for x in mean[1])} | {m:+.4f} "
            f"[{m - h:+.4f}, {m + h:+.4f}] | {crit[0]} → {crit[1]} |"
        )


def main() -> None:
    args = sys.argv[1:]
    mode = args.pop(0) if args and args[0] == "--newcomers" else ""
    (a, ka), (b, kb) = _load(args[0]), _load(args[1])
    if mode:
        newcomers(a, ka, b, kb)
        return
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
