"""Linear probe: how well do the "oracle features" (``pixelstats``, a diagnostic
in ``benchmarks/oracle_features.py``, not a product backbone) recover the
procedural generator's eight attributes?

Renders images with ``generation.backends.procedural.render``, embeds them with
each backbone and prints the 5-fold cross-validated ridge R² per attribute.
Features come from pixels only; the attributes are used solely as probe targets.
Usage::

    .venv/bin/python benchmarks/pixelstats_probe.py                  # v1 and v2
    .venv/bin/python benchmarks/pixelstats_probe.py --backbones pixelstats:v2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import oracle_features  # noqa: E402
from generation.backends.procedural import ATTRIBUTES  # noqa: E402

SUBJECTS = (
    "a lighthouse",
    "a city street",
    "a forest",
    "a portrait",
    "a bowl of fruit",
    "a mountain lake",
    "a dress",
    "an abstract composition",
    "a car",
    "a cat",
)
MODIFIERS = (
    "at sunset",
    "in winter",
    "vivid neon",
    "muted pastel",
    "dark moody",
    "bright airy",
    "minimal",
    "intricate detailed",
    "symmetric",
    "grainy film",
    "soft round shapes",
    "sharp geometric",
    "golden hour",
    "underwater",
    "",
)


def ridge_r2(x: np.ndarray, y: np.ndarray, *, folds: int = 5, lam: float = 1.0):
    """Per-column out-of-fold R² of a ridge fit on standardised features."""
    n = len(x)
    order = np.random.default_rng(0).permutation(n)
    pred = np.zeros_like(y)
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-8
        xt = np.c_[(x[train] - mu) / sd, np.ones(len(train))]
        reg = lam * np.eye(xt.shape[1])
        reg[-1, -1] = 0
        w = np.linalg.solve(xt.T @ xt + reg, xt.T @ y[train])
        pred[test] = np.c_[(x[test] - mu) / sd, np.ones(len(test))] @ w
    return 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=800)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed-offset", type=int, default=100_000)
    p.add_argument("--backbones", nargs="+", default=["pixelstats:v1", "pixelstats:v2"])
    args = p.parse_args()

    from generation.backends.procedural import render
    from rewardmodel.backbones import get_backbone

    oracle_features.register()

    images, targets = [], []
    for i in range(args.images):
        prompt = f"{SUBJECTS[i % len(SUBJECTS)]} {MODIFIERS[(i // 10) % 15]}".strip()
        data, info = render(
            prompt=prompt, seed=args.seed_offset + i, width=args.size, height=args.size
        )
        images.append(data)
        targets.append([info["attributes"][a] for a in ATTRIBUTES])
    y = np.asarray(targets, dtype=np.float64)
    print(f"{args.images} images at {args.size} px; 5-fold ridge R² per attribute")
    print("| backbone | dim | " + " | ".join(ATTRIBUTES) + " | mean | embed s |")
    print("| --- " * (len(ATTRIBUTES) + 4) + "|")
    for key in args.backbones:
        bb = get_backbone(key)
        t0 = time.monotonic()
        x = bb.embed(images).astype(np.float64)
        dt = time.monotonic() - t0
        r2 = ridge_r2(x, y)
        cells = " | ".join(f"{v:.2f}" for v in r2)
        print(f"| `{key}` | {bb.dim} | {cells} | {r2.mean():.2f} | {dt:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
