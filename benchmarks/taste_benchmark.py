"""Honest benchmark of the personalised reward model against simple baselines.

A simulator whose taste lives in a generic embedding space, variants defined in
``benchmarks/taste_variants.json`` (not in model code), several seeds, and the
product's own training function (``rewardmodel.training.train_and_evaluate``:
stored-split protocol, selection on validation, test report) on:

* ``synthetic``: Gaussian embeddings (256-d, unit length);
* ``generic``: generic features of procedural images (16×16 colour thumbnail,
  HSV histogram, gradient-orientation histogram; nothing that mirrors the
  generator's rendering steps);
* ``tiny-clip``: the product's open_clip code path (tiny ViT, random weights
  seeded from its name) on the same procedural images, while taste lives in the
  generic features: what the product does when its backbone knows little.

Annotator utility (per variant weights): shared linear + group linear +
individual linear (idiosyncratic directions) − ideal-point distance in a
low-dimensional projection + per-domain preference, then per-annotator scale
use and Gaussian noise; noise is calibrated on a separate draw so the
simulator's ceiling (pairwise accuracy of the noiseless utility) is the
variant's target. Splits: ``annotation.splits.split_assign``, the function that
labels every stored rating; ≥ 40 unseen (test_unseen) annotators per run.

Reported per variant × backbone × split/k: mean per-annotator pairwise
accuracy of the model and the baselines (independently fitted population
ridge, per-annotator ridge on the same embedding, leave-one-out consensus),
pooled over seeds with a 95% interval over annotators, the ceiling, and the gain
(acc − 0.5) / (ceiling − 0.5).

    .venv/bin/python benchmarks/taste_benchmark.py                 # everything
    .venv/bin/python benchmarks/taste_benchmark.py --variants linear --seeds 1
    .venv/bin/python benchmarks/taste_benchmark.py --first-seed 3   # fresh seeds
    .venv/bin/python benchmarks/taste_benchmark.py --seeds 6 --fresh 4 \
        --images 800 --annotators 150 --backbones synthetic   # issue 26's check
    .venv/bin/python benchmarks/taste_benchmark.py --paired lowrank --seeds 4 \
        --images 800 --annotators 150 --backbones tiny-clip --raw t.json
        # the similar crowd with the low-rank agreement prior (the default)
        # against "similar": true (``rows`` against ``rows_off``; compare_raw.py)

Then, per variant × backbone, issue 26's criteria as "n of N seeds" with the
pooled paired interval (``seed_table``; with several variants, a last row per
backbone pools the whole benchmark, as issue 26 words its target), and the
headroom over the best
baseline: to the ceiling, to the *crowd ceiling* (the part of each utility the
crowd shares, noiseless: the most a model with no personal signal from the
images could reach with infinitely many raters per image), and what knowing
everyone's true taste group adds to the LOO consensus of the actual 14 others
(``known_group_gain``, an optimistic diagnostic).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

import django  # noqa: E402

django.setup()

from annotation.splits import split_assign  # noqa: E402
from rewardmodel import evaluation as V  # noqa: E402
from rewardmodel import taste as T  # noqa: E402
from rewardmodel.metrics import by_annotator, mean_pairwise  # noqa: E402
from rewardmodel.threads import compute_threads  # noqa: E402
from rewardmodel.training import train_and_evaluate  # noqa: E402

WHO = ("model", "population", "per_annotator_ridge", "loo_consensus")
# --paired lowrank: (rank, λ, cross-fitted, prior for everyone, capped), --lowrank;
# chosen on tuning seeds 0-3 (RESULTS.md "Issue 26: low-rank agreement prior").
LOWRANK = (4, 5.0, 1, 0, 1)
PROMPTS = [
    "a fox in a forest",
    "a city at night",
    "a bowl of fruit",
    "a sailing boat at sea",
    "a mountain lake at dawn",
    "a portrait of an old man",
    "an abstract pattern",
    "a busy market street",
]


def variants_load(names: list[str] | None) -> dict:
    spec = json.loads((HERE / "taste_variants.json").read_text())
    out = {}
    for name, v in spec["variants"].items():
        if names and name not in names:
            continue
        out[name] = {**spec["defaults"], **v}
    return out


# --- embeddings --------------------------------------------------------------------


def synthetic_embeddings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(10_000 + seed)
    emb = rng.normal(size=(n, 256)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, rng.integers(0, 6, size=n)


def generic_features(png: bytes) -> np.ndarray:
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    thumb = np.asarray(im.resize((16, 16), Image.BILINEAR), np.float32) / 255
    hsv = np.asarray(im.resize((64, 64)).convert("HSV"), np.float32) / 255
    hist = np.concatenate(
        [np.histogram(hsv[..., c], bins=12, range=(0, 1))[0] for c in range(3)]
    ).astype(np.float32)
    lum = np.asarray(im.resize((64, 64)).convert("L"), np.float32) / 255
    gy, gx = np.gradient(lum)
    ang = np.arctan2(gy, gx)
    mag = np.hypot(gx, gy)
    ori = np.histogram(ang, bins=12, range=(-np.pi, np.pi), weights=mag)[0]
    feats = np.concatenate(
        [thumb.ravel(), hist / hist.sum(), ori / (ori.sum() + 1e-6)]
    ).astype(np.float32)
    return feats


def procedural_images(n: int, cache: Path) -> tuple[list[bytes], np.ndarray]:
    """The stimulus set (rendered once, cached on disk): n images, 8 domains."""
    from generation.backends.procedural import render

    path = cache / f"procedural_{n}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        blobs = [bytes(z[f"i{i}"]) for i in range(n)]
        return blobs, z["domain"]
    blobs, domains = [], []
    for i in range(n):
        d = i % len(PROMPTS)
        png, _ = render(prompt=PROMPTS[d], seed=i, width=96, height=96)
        blobs.append(png)
        domains.append(d)
    cache.mkdir(parents=True, exist_ok=True)
    arrays = {f"i{i}": np.frombuffer(b, np.uint8) for i, b in enumerate(blobs)}
    np.savez(path, domain=np.asarray(domains), **arrays)
    return blobs, np.asarray(domains)


def whiten(feats: np.ndarray, dim: int = 256) -> np.ndarray:
    """PCA-whitened generic features (what "taste in a generic space" means here),
    unit length like CLIP embeddings."""
    x = feats - feats.mean(0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(dim, int((s > 1e-6).sum()))
    z = (x @ vt[:k].T) / s[:k] * math.sqrt(len(x))
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def tiny_clip(blobs: list[bytes]) -> np.ndarray:
    from rewardmodel.backbones import get_backbone

    bb = get_backbone("open_clip:palate-tiny-vit")
    out = [bb.embed(blobs[i : i + 64]) for i in range(0, len(blobs), 64)]
    return np.concatenate(out).astype(np.float32)


# --- the simulator ---------------------------------------------------------------


def utilities(v: dict, taste_space: np.ndarray, domains: np.ndarray, seed: int):
    """Noiseless utility (n_annotators × n_images), the annotators' groups, and
    the crowd's part of each utility: its expectation over the annotator's own
    draws (individual direction, ideal point, domain preferences, interaction
    coefficient) given the shared and group taste, i.e. what anyone could know
    of the person from the crowd alone (the contrarian flip kept: their own
    ratings reveal it). Its pairwise accuracy bounds a model that has no
    personal signal from the images (``crowd ceiling``)."""
    rng = np.random.default_rng(seed)
    n_img = taste_space.shape[0]
    n_ann, lat = int(v["annotators"]), int(v["latent"])
    proj = rng.normal(size=(taste_space.shape[1], lat)) / math.sqrt(
        taste_space.shape[1]
    )
    z = taste_space @ proj
    z = (z - z.mean(0)) / z.std(0)
    group = rng.integers(0, int(v["groups"]), size=n_ann)
    shared = rng.normal(size=lat)
    groups = rng.normal(size=(int(v["groups"]), lat))
    own = rng.normal(size=(n_ann, lat))
    common = v["shared"] * shared[None, :] + v["group"] * groups[group]
    # Written as before the crowd part existed, so the draws stay bit-identical.
    util = ((common + v["individual"] * own) / math.sqrt(lat)) @ z.T
    crowd = (common / math.sqrt(lat)) @ z.T
    if v["ideal_point"]:
        p = z[:, :3]
        ideal = rng.normal(size=(n_ann, 3))
        dist = ((p[None, :, :] - ideal[:, None, :]) ** 2).sum(-1)
        util = util - v["ideal_point"] * (dist - dist.mean()) / dist.std()
        # E over the ideal point ~ N(0, I₃) of |p − ideal|² is |p|² + 3.
        expected = (p**2).sum(-1) + 3
        crowd = crowd - v["ideal_point"] * (expected - dist.mean()) / dist.std()
    if v["domain"]:
        pref = rng.normal(size=(n_ann, int(domains.max()) + 1))
        util = util + v["domain"] * pref[:, domains]  # mean 0: nothing for crowd
    util, crowd = _extras(v, util, crowd, z, rng)
    mean, sd = util.mean(), util.std()
    util, crowd = (util - mean) / sd, (crowd - mean) / sd
    assert util.shape == crowd.shape == (n_ann, n_img)
    return util, group, crowd


def _extras(v: dict, util: np.ndarray, crowd: np.ndarray, z: np.ndarray, rng):
    """The variants added for issue 26 (drawn after the others, so the older
    variants' draws are unchanged): a taste on the *interaction* of two
    attributes (each annotator's own sign and size on z₀·z₁, invisible to any
    linear head on z), and *contrarians*, annotators whose shared and group
    taste is reversed (a crowd that disagrees with the person). ``crowd``
    follows along (the interaction's mean coefficient 0.5)."""
    n_ann = util.shape[0]
    if v.get("interaction"):
        inter = z[:, 0] * z[:, 1]
        inter = (inter - inter.mean()) / inter.std()
        coef = 0.5 + rng.normal(size=n_ann)
        sd = util.std()
        util = util / sd + v["interaction"] * coef[:, None] * inter[None, :]
        crowd = crowd / sd + v["interaction"] * 0.5 * inter[None, :]
    if v.get("contrarian"):
        flip = rng.random(n_ann) < v["contrarian"]
        util = np.where(flip[:, None], -util, util)
        crowd = np.where(flip[:, None], -crowd, crowd)
    return util, crowd


def draw_ratings(v: dict, util: np.ndarray, noise: float, seed: int):
    """Who rates what (per_image raters per image) and their integer scores."""
    rng = np.random.default_rng(seed + 1)
    n_ann, n_img = util.shape
    lo, hi = v["scale"]
    offset, spread = rater_scales(v, n_ann, rng)
    rows, anns = [], []
    for i in range(n_img):
        rows += [i] * int(v["per_image"])
        anns += rng.choice(n_ann, int(v["per_image"]), replace=False).tolist()
    rows, anns = np.asarray(rows), np.asarray(anns)
    latent = util[anns, rows] + rng.normal(0, noise, size=rows.size)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    raw = mid + half * np.tanh(SQUASH * (spread[anns] * latent + offset[anns]))
    return rows, anns, np.clip(np.rint(raw), lo, hi)


SQUASH = 0.8  # latent → scale: mid + half · tanh(SQUASH · (spread · latent + offset))


def rater_scales(v: dict, n_ann: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Where on the scale each annotator rates (offset; "offset": annotators
    on different parts of the scale, e.g. one only uses the top half) and how
    widely (spread): ``draw_ratings``' first draws from its generator."""
    offset = rng.normal(0, v.get("offset", v["scale_use"]), size=n_ann)
    return offset, np.exp(rng.normal(0, v["scale_use"], size=n_ann))


def ceiling_of(util, rows, anns, scores) -> float:
    """Mean per-annotator pairwise accuracy of the noiseless utility."""
    return mean_pairwise(anns, scores, util[anns, rows])


def calibrate_noise(v: dict, util: np.ndarray, seed: int) -> float:
    """Noise sd whose ceiling is the variant's target (bisection on a separate
    draw of raters and noise)."""
    lo, hi = 0.05, 4.0
    for _ in range(14):
        mid = (lo + hi) / 2
        rows, anns, scores = draw_ratings(v, util, mid, seed + 999)
        if ceiling_of(util, rows, anns, scores) > v["ceiling"]:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# --- one run -----------------------------------------------------------------------


def simulate(v: dict, taste_space, domains, seed: int) -> SimpleNamespace:
    """One run's data: utilities (and each rater's group, the crowd's part),
    the calibrated noise, the ratings and their stored split codes."""
    util, group, crowd = utilities(v, taste_space, domains, seed)
    noise = calibrate_noise(v, util, seed)
    rows, anns, scores = draw_ratings(v, util, noise, seed)
    study = 10_000 + seed
    split = np.asarray(
        [
            V.CODES[
                split_assign(image_key=f"{study}:{r}", annotator_key=f"{study}:{a}")
            ]
            for r, a in zip(rows, anns, strict=True)
        ]
    )
    return SimpleNamespace(
        util=util,
        group=group,
        crowd=crowd,
        noise=noise,
        rows=rows,
        anns=anns,
        scores=scores,
        split=split,
    )


def run_one(
    v: dict, emb: np.ndarray, taste_space, domains, seed: int, paired: str = ""
) -> dict:
    sim = simulate(v, taste_space, domains, seed)
    util, group, crowd, noise = sim.util, sim.group, sim.crowd, sim.noise
    snap = snapshot_of(sim)
    t0 = time.monotonic()
    if paired:
        out = _paired(snap, emb, seed, paired)
    else:
        with compute_threads():
            res = train_and_evaluate(snap=snap, emb=emb, cfg={"seed": seed})
        out = {
            "rows": res.per_annotator,
            "hyper": res.summary["hyper"],
            "versus": res.summary["selection"]["blend"],
        }
    out["fit_s"] = time.monotonic() - t0
    out["ceil"] = per_annotator_ceilings(util, snap, seed)
    out["ceil_crowd"] = per_annotator_ceilings(crowd, snap, seed)
    out["known_groups"] = known_group_gain(snap, group)
    out["noise"] = noise
    return out


def snapshot_of(sim: SimpleNamespace) -> SimpleNamespace:
    """What training reads from the database (``training.snapshot``'s fields),
    for a simulated run: annotator and image ids are the simulator's indices."""
    return SimpleNamespace(
        r_row=sim.rows,
        r_ann=sim.anns,
        r_score=sim.scores.astype(np.float64),
        r_split=sim.split,
        annotator_keys=[str(a) for a in range(sim.util.shape[0])],
        counts={"ratings_train": int((sim.split == 0).sum())},
        e_score=np.zeros(0),
        e_row=np.zeros(0, np.int64),
        e_src=np.zeros(0, np.int64),
        sources=[],
    )


def _paired(snap, emb, seed: int, mode: str) -> dict:
    """Selection once (per-annotator blend weights allowed: ``mode`` "auto";
    "per_annotator" forces them, for tuning), then the
    test report twice: as selected, and with the per-annotator weights
    dropped (the global blend, i.e. the option off). Same data, splits and
    everything else, so the two are paired; no deployed refit."""
    from dataclasses import replace

    from rewardmodel import selection as Sel
    from rewardmodel import training as TR

    if mode in ("similar", "lowrank"):
        return _paired_similar(snap, emb, seed, mode)
    with compute_threads():
        data = TR._data(
            snap, emb, {**TR.DEFAULT_CONFIG, "seed": seed, "blend_mode": mode}
        )
        hyper, prior, selection = TR.hyper_select(data, lambda m: None)
        tuned = Sel.tune_baselines(data)
        _, rows, _ = V.report(data, hyper, tuned, prior)
        rows_off = rows
        if hyper.blend_annotators is not None:
            off = replace(hyper, blend_annotators=None)
            _, rows_off, _ = V.report(data, off, tuned, prior)
    return {
        "rows": TR.json_clean(rows),
        "rows_off": TR.json_clean(rows_off),
        "hyper": hyper.as_dict(),
        "versus": selection["blend"],
    }


def _paired_similar(snap, emb, seed: int, mode: str = "similar") -> dict:
    """The similarity-weighted consensus as a fifth blend member (issue 26
    experiment, ``crowd.Similar``): selection and test report with it, then
    selection and report without it on the same data and splits, so the two
    arms are paired; no deployed refit. The off arm is ``rows_off``. ``mode``
    "lowrank": the member with its agreements shrunk toward the low-rank prior
    (``LOWRANK``, training's default; ``rewardmodel.lowrank``) against the
    member shrunk toward one global mean ("similar": true)."""
    from rewardmodel import selection as Sel
    from rewardmodel import training as TR

    with compute_threads():
        data = TR._data(snap, emb, {**TR.DEFAULT_CONFIG, "seed": seed})
        data.similar = LOWRANK if mode == "lowrank" else True
        hyper, prior, selection = TR.hyper_select(data, lambda m: None)
        tuned = Sel.tune_baselines(data)
        _, rows, _ = V.report(data, hyper, tuned, prior)
        data.similar = mode == "lowrank"
        off, prior_off, _ = TR.hyper_select(data, lambda m: None)
        _, rows_off, _ = V.report(data, off, tuned, prior_off)
    return {
        "rows": TR.json_clean(rows),
        "rows_off": TR.json_clean(rows_off),
        "hyper": hyper.as_dict(),
        "versus": selection["blend"],
    }


def per_annotator_ceilings(util, snap, seed) -> dict:
    """Ceiling per (split, k, annotator) on exactly the rows evaluated."""
    from rewardmodel.metrics import pairwise_accuracy

    r = T.Ratings(snap.r_row, snap.r_ann, snap.r_score)
    out = {}
    seen = r.take(snap.r_split == V.CODES["test_seen"])
    for a, idx in by_annotator(seen.ann):
        out[("seen", None, a)] = pairwise_accuracy(
            seen.score[idx], util[a, seen.row[idx]]
        )
    unseen = r.take(snap.r_split == V.CODES["test_unseen"])
    for p in V.newcomers(unseen, ks=[0, 5, 10, 20], seed=seed):
        q = p.query
        out[("unseen", p.ann)] = pairwise_accuracy(q.score, util[p.ann, q.row])
    return out


def known_group_gain(snap, group: np.ndarray) -> float:
    """What knowing everyone's true taste group would add to the LOO
    consensus of the 14 others, on test_seen (mean per-annotator pairwise
    accuracy): the others' mean moved toward the mean of the same-group others
    by β, the best β of a grid *chosen on test* (an optimistic bound, a
    diagnostic of the simulator, never a model), minus β = 0. Ratings
    normalised per annotator on their train ratings, as training does."""
    row, ann, score = snap.r_row, snap.r_ann, snap.r_score
    train = snap.r_split == V.CODES["train"]
    fit = T.Ratings(row[train], ann[train], score[train])
    z = T.normalised(T.Ratings(row, ann, score), *T.norm_stats(fit, int(ann.max()) + 1))
    n_rows = int(row.max()) + 1
    g = group[ann]
    total = np.bincount(row, weights=z, minlength=n_rows)
    count = np.bincount(row, minlength=n_rows).astype(np.float64)
    g_total = np.zeros((int(group.max()) + 1, n_rows))
    g_count = np.zeros_like(g_total)
    np.add.at(g_total, (g, row), z)
    np.add.at(g_count, (g, row), 1.0)
    t = snap.r_split == V.CODES["test_seen"]
    r, a, zt, gt = row[t], ann[t], z[t], g[t]
    others = (total[r] - zt) / np.maximum(count[r] - 1, 1)
    same_n = g_count[gt, r] - 1
    same = np.where(same_n > 0, (g_total[gt, r] - zt) / np.maximum(same_n, 1), others)
    accs = [
        mean_pairwise(a, snap.r_score[t], others + beta * (same - others))
        for beta in (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    ]
    return float(max(accs) - accs[0])


def _chosen(hyper: dict, blend: dict) -> str:
    """What selection kept, in a few words (for the log)."""
    h = hyper
    w = blend.get("weights") or {}
    ws = ", ".join(f"{k} {x:.2f}" for k, x in w.items())
    alpha = (blend.get("shrinkage") or {}).get("alpha")
    ws += "" if alpha is None else f" (α {alpha:g} toward the best member)"
    per = blend.get("per_annotator")
    if per:
        ws += (
            f"; per-annotator {per['mode']} (gain {per.get('gain')} ± "
            f"{per.get('se')}, τ²/σ² {per.get('ratio')})"
        )
    return (
        f"base {h['base']}, τ² {h['tau2_rel']:.3g}, ρ {h['rho']:g}, γ {h['gamma']:g}; "
        f"blend {ws}; newcomers: base {h['new_base']}, τ² {h['new_tau2_rel']:.3g}"
    )


# --- tables ------------------------------------------------------------------------


def _ci(vals: list[float]) -> tuple[float, float, float]:
    vals = [x for x in vals if x is not None]
    m = float(np.mean(vals))
    h = (
        1.96 * float(np.std(vals, ddof=1)) / math.sqrt(len(vals))
        if len(vals) > 1
        else 0
    )
    return m, m - h, m + h


def aggregate(runs: list[dict]) -> dict:
    """(split, k) -> who -> (mean, lo, hi), plus ceiling, n annotators, gain."""
    cells: dict = {}
    for run in runs:
        for row in run["rows"]:
            key = (row["split"], row["k"])
            c = cells.setdefault(key, {w: [] for w in (*WHO, "ceiling")})
            for w in WHO:
                c[w].append(row[w]["pairwise_accuracy"])
            ck = (
                ("seen", None, row["annotator"])
                if row["split"] == "seen"
                else (
                    "unseen",
                    row["annotator"],
                )
            )
            c["ceiling"].append(run["ceil"].get(ck))
    out = {}
    for key, c in cells.items():
        agg = {w: _ci(c[w]) for w in (*WHO, "ceiling")}
        agg["n"] = len(c["model"])
        ceil = agg["ceiling"][0]
        agg["gain"] = {
            w: (agg[w][0] - 0.5) / (ceil - 0.5) if ceil > 0.5 else float("nan")
            for w in WHO
        }
        out[key] = agg
    return out


def fmt(c) -> str:
    return f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]"


def table(results: dict) -> str:
    """The table, then how many cells meet each criterion of issue 12."""
    lines = [
        "| variant | backbone | split | k | n | personalised | population | "
        "per-annotator ridge | LOO consensus | ceiling | gain (pers. / pop.) | "
        "pers. ≥ best baseline | pers. ≥ population |",
        "|" + " --- |" * 13,
    ]
    count = {"seen": [0, 0], "unseen_best": [0, 0], "unseen_pop": [0, 0]}
    flat = [0, 0, 0]  # never drops with k; largest k ≥ k = 0; variant × backbone
    for (variant, backbone), agg in results.items():
        keys = sorted(agg, key=lambda k: (k[0] != "seen", k[1] or 0))
        for split, k in keys:
            a = agg[(split, k)]
            best = (
                max(a[w][0] for w in WHO[1:])
                if split == "seen"
                else max(a["population"][0], a["loo_consensus"][0])
            )
            ok = a["model"][0] >= best - 1e-9
            ok_pop = a["model"][0] >= a["population"][0] - 1e-9
            if split == "seen":
                count["seen"][0] += ok
                count["seen"][1] += 1
            else:
                count["unseen_best"][0] += ok
                count["unseen_pop"][0] += ok_pop
                count["unseen_best"][1] += 1
                count["unseen_pop"][1] += 1
            lines.append(
                f"| {variant} | {backbone} | {split} | {'' if k is None else k} | "
                f"{a['n']} | {fmt(a['model'])} | {fmt(a['population'])} | "
                f"{fmt(a['per_annotator_ridge'])} | {fmt(a['loo_consensus'])} | "
                f"{a['ceiling'][0]:.3f} | {a['gain']['model']:.2f} / "
                f"{a['gain']['population']:.2f} | {_yes(ok)} | {_yes(ok_pop)} |"
            )
        ks = sorted(k for sp, k in agg if sp == "unseen")
        if ks:
            by_k = [agg[("unseen", k)]["model"][0] for k in ks]
            flat[0] += all(b >= a - 1e-9 for a, b in zip(by_k, by_k[1:], strict=False))
            flat[1] += by_k[-1] >= by_k[0] - 1e-9
            flat[2] += 1
    lines += [
        "",
        f"seen: personalised ≥ best of the three baselines in "
        f"{count['seen'][0]}/{count['seen'][1]} cells",
        f"unseen: personalised ≥ population in "
        f"{count['unseen_pop'][0]}/{count['unseen_pop'][1]} rows, ≥ max(population, "
        f"LOO consensus) in {count['unseen_best'][0]}/{count['unseen_best'][1]}",
        f"unseen: accuracy never drops as k grows in {flat[0]}/{flat[2]} "
        f"variant × backbone, largest k ≥ k = 0 in {flat[1]}/{flat[2]}",
    ]
    return "\n".join(lines)


TIE = 0.001  # |model − best baseline| within this: a tie, not a win or a loss


def seed_table(per_cell: dict) -> str:
    """Issue 26's criteria per variant × backbone, each as "n of N seeds", with
    the pooled paired interval: seen, model − best single baseline (the baseline
    best pooled over the cell's seeds; per-annotator paired differences, 95 %
    interval over annotators of every seed); per seed, model − that seed's best
    baseline (beats / ties within ±0.001 / below; below by > 0.01 is the
    failure); unseen, pooled model ≥ population at every k and non-decreasing
    in k."""
    lines = [
        "| variant | backbone | seeds | best baseline | pooled model − best "
        "[95 % CI] | seeds beat / tie / below | below by > 0.01 | worst seed | "
        "unseen ≥ pop. every k | unseen non-decreasing in k | headroom: ceiling "
        "/ crowd ceiling − best | known groups add to LOO |",
        "|" + " --- |" * 12,
    ]
    benchmark: dict = {}  # backbone -> (seen differences, per-seed ones, runs)
    for (variant, backbone), (seeds, runs) in per_cell.items():
        seen = [
            [
                r
                for r in run["rows"]
                if r["split"] == "seen"
                and all(r[w]["pairwise_accuracy"] is not None for w in WHO)
            ]
            for run in runs
        ]
        pooled = {
            w: float(np.mean([r[w]["pairwise_accuracy"] for rs in seen for r in rs]))
            for w in WHO[1:]
        }
        best = max(pooled, key=pooled.get)
        diffs = [
            r["model"]["pairwise_accuracy"] - r[best]["pairwise_accuracy"]
            for rs in seen
            for r in rs
        ]
        d = _ci(diffs)
        room = [_headroom(run, rs, best) for run, rs in zip(runs, seen, strict=True)]
        per_seed = []
        for rs in seen:
            means = {
                w: float(np.mean([r[w]["pairwise_accuracy"] for r in rs])) for w in WHO
            }
            per_seed.append(means["model"] - max(means[w] for w in WHO[1:]))
        beat = sum(x > TIE for x in per_seed)
        tie = sum(abs(x) <= TIE for x in per_seed)
        worst = int(np.argmin(per_seed))
        pop_ok, mono = _unseen_criteria(runs)
        n = len(per_seed)
        whole = benchmark.setdefault(backbone, ([], [], []))
        whole[0].extend(diffs)
        whole[1].extend(per_seed)
        whole[2].extend(runs)
        lines.append(
            f"| {variant} | {backbone} | {n} | {best} | {d[0]:+.4f} "
            f"[{d[1]:+.4f}, {d[2]:+.4f}] | {beat} / {tie} / {n - beat - tie} of {n} "
            f"| {sum(x < -0.01 for x in per_seed)} of {n} | {per_seed[worst]:+.4f} "
            f"(seed {seeds[worst]}) | {_yes(pop_ok)} | {_yes(mono)} | "
            f"{np.mean([x for r in room for x in r[0]]):+.4f} / "
            f"{np.mean([x for r in room for x in r[1]]):+.4f} | "
            f"{np.mean([run['known_groups'] for run in runs]):+.4f} |"
        )
    if len(per_cell) > len(benchmark):  # several variants: the whole benchmark too
        lines += [_pooled_row(b, *whole) for b, whole in benchmark.items()]
    return "\n".join(lines)


def _pooled_row(backbone: str, diffs: list, per_seed: list, runs: list) -> str:
    """``seed_table``'s row for the whole benchmark on one backbone, as issue
    26 words its target: every variant's seen annotators against that
    variant's best baseline, pooled; every (variant, seed) counted; the unseen
    annotators of every variant pooled per k (their population alongside)."""
    d = _ci(diffs)
    n = len(per_seed)
    beat = sum(x > TIE for x in per_seed)
    tie = sum(abs(x) <= TIE for x in per_seed)
    pop_ok, mono = _unseen_criteria(runs)
    return (
        f"| **all variants, pooled** | {backbone} | {n} (variant × seed) | each "
        f"variant's | {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] | {beat} / {tie} / "
        f"{n - beat - tie} of {n} | {sum(x < -0.01 for x in per_seed)} of {n} | "
        f"{min(per_seed):+.4f} | {_yes(pop_ok)} | {_yes(mono)} | | |"
    )


def _unseen_criteria(runs: list) -> tuple[bool, bool]:
    """(the model ≥ the population at every k, non-decreasing in k): the
    unseen annotators of ``runs`` pooled per k."""
    agg = aggregate(runs)
    ks = sorted(k for sp, k in agg if sp == "unseen")
    model_k = [agg[("unseen", k)]["model"][0] for k in ks]
    pop_ok = all(
        agg[("unseen", k)]["model"][0] >= agg[("unseen", k)]["population"][0] - 1e-9
        for k in ks
    )
    mono = all(b >= a - 1e-9 for a, b in zip(model_k, model_k[1:], strict=False))
    return pop_ok, mono


def _headroom(run: dict, seen_rows: list, best: str) -> tuple[list, list]:
    """Per seen annotator: the ceiling and the crowd ceiling (see
    ``utilities``) minus the best baseline, on the rows evaluated: how much a
    model could beat it by at all, and without a personal signal."""
    out: tuple[list, list] = ([], [])
    for r in seen_rows:
        key = ("seen", None, r["annotator"])
        for i, ceil in enumerate((run["ceil"], run["ceil_crowd"])):
            if ceil.get(key) is not None:
                out[i].append(ceil[key] - r[best]["pairwise_accuracy"])
    return out


def paired_table(per_cell: dict) -> str:
    """Per-annotator weights as selected against the global blend, same runs:
    seen, the model's paired per-annotator difference (95 % interval over the
    annotators of every seed), seeds where selection chose per-annotator
    weights, and the per-seed change (better / same within ±0.001 / worse)."""
    lines = [
        "| variant | backbone | seeds | per-annotator chosen | model, on − off "
        "[95 % CI] | seeds better / same / worse | worst seed change |",
        "|" + " --- |" * 7,
    ]
    for (variant, backbone), (seeds, runs) in per_cell.items():
        diffs, per_seed = [], []
        for run in runs:
            off = {
                r["annotator"]: r["model"]["pairwise_accuracy"]
                for r in run["rows_off"]
                if r["split"] == "seen"
            }
            d = [
                r["model"]["pairwise_accuracy"] - off[r["annotator"]]
                for r in run["rows"]
                if r["split"] == "seen"
                and r["model"]["pairwise_accuracy"] is not None
                and off.get(r["annotator"]) is not None
            ]
            diffs += d
            per_seed.append(float(np.mean(d)) if d else 0.0)
        chosen = sum(
            (r["versus"].get("per_annotator") or {}).get("mode") == "per_annotator"
            for r in runs
        )
        m = _ci(diffs)
        n = len(runs)
        better = sum(x > TIE for x in per_seed)
        same = sum(abs(x) <= TIE for x in per_seed)
        worst = int(np.argmin(per_seed))
        lines.append(
            f"| {variant} | {backbone} | {n} | {chosen} of {n} | {m[0]:+.4f} "
            f"[{m[1]:+.4f}, {m[2]:+.4f}] | {better} / {same} / {n - better - same} "
            f"| {per_seed[worst]:+.4f} (seed {seeds[worst]}) |"
        )
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _plan(args) -> tuple[dict, list[int]]:
    """The variants (sizes overridden) and the seeds, fresh ones drawn now."""
    import secrets

    variants = variants_load(args.variants)
    for v in variants.values():
        if args.images:
            v["images"] = args.images
        if args.annotators:
            v["annotators"] = args.annotators
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    seeds += [s for s in args.seed_list or [] if s not in seeds]
    seeds += [1000 + secrets.randbelow(1_000_000) for _ in range(args.fresh)]
    print(f"seeds: {seeds}", file=sys.stderr)
    return variants, seeds


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="*")
    p.add_argument(
        "--backbones", nargs="*", default=["synthetic", "generic", "tiny-clip"]
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed … (checks on fresh draws)",
    )
    p.add_argument(
        "--seed-list",
        type=int,
        nargs="*",
        help="also these seeds (to re-run earlier fresh draws, paired)",
    )
    p.add_argument(
        "--fresh",
        type=int,
        default=0,
        help="also this many seeds drawn at run time (printed)",
    )
    p.add_argument("--images", type=int, help="override every variant's images")
    p.add_argument("--annotators", type=int, help="and its annotators")
    p.add_argument("--cache", default="/tmp/palate-taste-bench")
    p.add_argument("--json", help="write raw aggregates here")
    p.add_argument("--raw", help="write every run's per-annotator rows here")
    p.add_argument(
        "--paired",
        nargs="?",
        const="auto",
        default="",
        choices=["auto", "per_annotator", "similar", "lowrank"],
        help="per-annotator blend weights allowed (selection's out-of-fold "
        "choice; 'per_annotator' forces them) against the global blend on the "
        "very same runs (no refit); 'similar': the similarity-weighted "
        "consensus as a fifth member against main's four (issue 26 experiment); "
        "'lowrank': that member with the low-rank agreement prior against it",
    )
    p.add_argument(
        "--lowrank",
        nargs="+",
        type=float,
        default=LOWRANK,
        metavar="RANK LAMBDA [CROSS EVERYONE CAP]",
        help="--paired lowrank's factor rank and ridge λ; CROSS 1: calibrated "
        "across image halves; EVERYONE 1: the prior for pairs who never "
        "co-rated too; CAP 1: c1 >= 0 and the prior's spread <= τ²",
    )
    return p.parse_args()


def main() -> None:
    global LOWRANK
    args = parse_args()
    LOWRANK = (int(args.lowrank[0]), *map(float, args.lowrank[1:]))
    variants, seeds = _plan(args)
    per_cell: dict = {}
    results: dict = {}
    started = time.monotonic()
    fits = []
    for name, v in variants.items():
        n = int(v["images"])
        spaces = {}
        if "synthetic" in args.backbones:
            spaces["synthetic"] = None
        if {"generic", "tiny-clip"} & set(args.backbones):
            blobs, domains_p = procedural_images(n, Path(args.cache))
            generic = whiten(np.stack([generic_features(b) for b in blobs]))
            if "generic" in args.backbones:
                spaces["generic"] = (generic, generic, domains_p)
            if "tiny-clip" in args.backbones:
                spaces["tiny-clip"] = (tiny_clip(blobs), generic, domains_p)
        for backbone in args.backbones:
            runs = []
            for seed in seeds:
                if backbone == "synthetic":
                    emb, domains = synthetic_embeddings(n, seed)
                    space = emb
                else:
                    emb, space, domains = spaces[backbone]
                run = run_one(v, emb, space, domains, seed, paired=args.paired)
                fits.append(run["fit_s"])
                runs.append(run)
                print(
                    f"{name} {backbone} seed {seed}: noise {run['noise']:.2f}, "
                    f"fit+select+report {run['fit_s']:.1f}s; selected "
                    f"{_chosen(run['hyper'], run['versus'])}",
                    file=sys.stderr,
                )
            results[(name, backbone)] = aggregate(runs)
            per_cell[(name, backbone)] = (seeds, runs)
    print(f"seeds: {seeds}\n")
    print(table(results))
    print()
    print(seed_table(per_cell))
    if args.paired:
        off = {
            k: (s, [{**r, "rows": r["rows_off"]} for r in runs])
            for k, (s, runs) in per_cell.items()
        }
        print("\nThe same runs with the per-annotator weights off (global blend):\n")
        print(seed_table(off))
        print()
        print(paired_table(per_cell))
    if args.raw:  # every run's per-annotator rows, to re-read without re-running
        raw = {
            f"{k[0]}|{k[1]}": {
                "seeds": s,
                "rows": [run["rows"] for run in runs],
                **(
                    {
                        "rows_off": [run["rows_off"] for run in runs],
                        "blend": [run["versus"] for run in runs],
                    }
                    if args.paired
                    else {}
                ),
            }
            for k, (s, runs) in per_cell.items()
        }
        Path(args.raw).write_text(json.dumps(raw, default=str))
    print(
        f"\n{len(fits)} runs, {time.monotonic() - started:.0f}s total, "
        f"train_and_evaluate median {np.median(fits):.1f}s; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    f"{k[0]}|{k[1]}": {f"{s}|{kk}": a for (s, kk), a in v.items()}
                    for k, v in results.items()
                },
                default=str,
            )
        )


if __name__ == "__main__":
    main()
