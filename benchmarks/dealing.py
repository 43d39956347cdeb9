"""Does adaptive dealing teach each annotator's model faster (issue 27)?

A simulated study run through the real engine (``assignment_claim``,
``rating_submit`` on this database) and the real model (training runs through
``rewardmodel.services``, rankings through ``rewardmodel.dealing``, accuracy
through ``inference.predict``), once per policy with the same annotators,
images and planted tastes:

* images: synthetic embeddings (Gaussian, ``--dim``), stored in the embedding
  cache under a benchmark backbone key; a **pilot** part of the study, already
  rated to its target by pilot annotators (the population a deployed model
  was trained on: version 0), the **open** part the simulation deals, and
  **probe** images (a study of their own, never rated) for accuracy;
* tastes: w_a = shared·w₀ + personal·Σ_k z_ak v_k (``--directions`` taste
  directions v_k shared by everyone, z_ak ~ N(0, 1) per person); a score is
  round(4 + 1.5·u/sd(u) + N(0, ``--noise``)) clipped to 1..7, u = x·w_a.
  Scenarios: ``diverse`` (personal 1.0, shared 0.5), ``shared`` (personal
  0.2, shared 1.0: tastes almost all shared) and ``scale`` (``diverse``'s
  tastes, but each annotator uses their own part of the scale: score
  round(4 + c_a + 1.5·s_a·u/sd(u) + N(0, ``--noise``)), c_a ~ U(−1.5, 1.5),
  s_a ~ U(0.5, 1.5); not in the default ``--scenarios``);
* the run: every tick each simulated annotator (random order) claims one image
  and rates it at once; a retrain (promoted) after tick k for k in the
  schedule, then every annotator's accuracy (mean over annotators) and the
  rankings refreshed (the training-completion hook's work); every annotator
  has their ranking refreshed after every ``--refresh-every``-th of their
  ratings (the product asks after each rating and runs it throttled in a
  Celery task, ``REFRESH_THROTTLE_S``; the posterior conditions on every
  rating given, the live newcomer path for anyone the version was not fitted
  on);
  the study runs until every image has its target;
* accuracy: pairwise accuracy of ``inference.predict`` on the probe images
  against the planted (noiseless) utility, per annotator, at each k of the
  schedule: ratings given = k for every annotator.

Printed per scenario × policy: the curve (mean and 95% interval over
annotators pooled over seeds), the paired difference with fullest-first at
each k, how many ratings adaptive needs to reach fullest-first's final
accuracy, and the ticks to finish. Seeds: ``--seeds`` fixed ones plus
``--fresh`` drawn at run time (printed and written to the JSON).

    .venv/bin/python benchmarks/dealing.py                  # the recorded run
    .venv/bin/python benchmarks/dealing.py --tiny           # seconds (the test)
    .venv/bin/python benchmarks/dealing.py --png docs/dealing_curves.png

It creates and drops its own database (``_common.setup_django``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

# (shared, personal, scale use): with scale use, each annotator rates around
# their own centre (4 + c_a, c_a ~ U(-1.5, 1.5)) with their own spread
# (s_a ~ U(0.5, 1.5)), the same planted tastes as ``diverse`` otherwise.
SCENARIOS = {
    "diverse": (0.5, 1.0, False),
    "shared": (1.0, 0.2, False),
    "scale": (0.5, 1.0, True),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a few seconds (the test)")
    p.add_argument("--scenarios", default="diverse,shared")
    p.add_argument("--policies", default="fullest-first,adaptive:2,adaptive:99")
    p.add_argument("--seeds", type=int, default=2, help="fixed seeds 1..N")
    p.add_argument("--fresh", type=int, default=1, help="seeds drawn at run time")
    p.add_argument("--dim", type=int, default=24)
    p.add_argument("--directions", type=int, default=3)
    p.add_argument("--noise", type=float, default=0.6)
    p.add_argument("--pilot-annotators", type=int, default=40)
    p.add_argument("--pilot-images", type=int, default=120)
    p.add_argument("--pilot-raters", type=int, default=15)
    p.add_argument("--annotators", type=int, default=30)
    p.add_argument("--images", type=int, default=150)
    p.add_argument("--raters", type=int, default=5)
    p.add_argument("--probe", type=int, default=80)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--schedule", default="10,15,20,25")
    p.add_argument(
        "--quota",
        type=int,
        default=0,
        help="ratings per annotator at most (0: twice their share of the slots, "
        "so nobody is held back; their share or a little more tests finishing)",
    )
    p.add_argument(
        "--refresh-every",
        type=int,
        default=1,
        help="refresh a ranking after every N-th rating of its annotator "
        "(N > 1: a ranking as stale as the product's throttle leaves it)",
    )
    p.add_argument("--json", default="", help="write every figure here")
    p.add_argument("--png", default="", help="draw the curves here")
    p.add_argument("--from-json", default="", help="summarise a recorded run")
    args = p.parse_args(argv)
    if args.tiny:
        args.seeds, args.fresh = 1, 0
        args.pilot_annotators, args.pilot_images, args.pilot_raters = 12, 30, 8
        args.annotators, args.images, args.raters, args.probe = 6, 16, 2, 20
        args.warmup, args.schedule, args.dim = 2, "3,5", 8
        args.policies = "fullest-first,adaptive:2"
    return args


# --- the world ---------------------------------------------------------------


class World:
    """Embeddings and planted tastes for one seed (the same for every policy)."""

    def __init__(self, args, seed: int, scenario: str):
        rng = np.random.default_rng(seed)
        self.seed, self.key = seed, f"{scenario}-{seed}"  # names images, annotators
        shared, personal, scale_use = SCENARIOS[scenario]
        n_img = args.pilot_images + args.images + args.probe
        self.x = rng.normal(size=(n_img, args.dim)).astype(np.float32)
        self.x /= np.linalg.norm(self.x, axis=1, keepdims=True)
        w0 = rng.normal(size=args.dim)
        v = rng.normal(size=(args.directions, args.dim))
        n_ann = args.pilot_annotators + args.annotators
        z = rng.normal(size=(n_ann, args.directions))
        self.w = shared * w0 + personal * z @ v  # (annotators, dim)
        u = self.x @ self.w.T  # (images, annotators)
        self.u = (u - u.mean(0)) / u.std(0)
        self.noise = rng.normal(0, args.noise, size=u.shape)
        # Drawn after everything else, so the other scenarios' worlds are
        # unchanged by their presence.
        self.centre = rng.uniform(-1.5, 1.5, n_ann) if scale_use else np.zeros(n_ann)
        self.spread = rng.uniform(0.5, 1.5, n_ann) if scale_use else np.ones(n_ann)
        self.pilot = np.arange(args.pilot_images)
        self.open = np.arange(args.pilot_images, args.pilot_images + args.images)
        self.probe = np.arange(args.pilot_images + args.images, n_img)

    def score(self, image: int, annotator: int) -> int:
        a = annotator
        raw = (
            4
            + self.centre[a]
            + 1.5 * self.spread[a] * self.u[image, a]
            + self.noise[image, a]
        )
        return int(np.clip(np.rint(raw), 1, 7))


# --- one run -------------------------------------------------------------------


def _setup_study(args, world: World, policy: str, band: int, tag: str):
    from annotation import services as ann
    from annotation.engine.services.dealing import dealing_policy_set
    from annotation.models import Assignment, Image, Rating, Study
    from annotation.splits import split_assign
    from rewardmodel.embeddings import to_blob
    from rewardmodel.models import Embedding

    study = ann.study_create(
        name=f"Dealing {tag}",
        slug=f"dealing-{tag}",
        status=Study.Status.OPEN,
        raters_per_image=args.raters,
        # Slack by default (nobody held back); --quota tight tests finishing:
        # the last images need raters who still have quota and never rated them.
        quota_per_annotator=args.quota
        or 2 * len(world.open) * args.raters // args.annotators,
    )
    probe_study = ann.study_create(name=f"Probe {tag}", slug=f"probe-{tag}")
    rows, probe = [], set(world.probe.tolist())
    # The images' places in the dealing order, from the world too (the product
    # draws them at random): fullest-first then deals alike in every rerun.
    shuffle = np.random.default_rng([world.seed, 1]).integers(
        0, 2**31 - 1, len(world.x)
    )
    for i in range(world.x.shape[0]):
        pilot = i < args.pilot_images
        rows.append(
            Image(
                study=probe_study if i in probe else study,
                file=f"synthetic/{tag}/{i}.png",
                # The split of a rating hashes the image's key and the
                # annotator's: both from the world alone (never the policy, never
                # a database id or a random public id), so every policy's run of
                # a seed trains on the same splits and a rerun repeats.
                sha256=hashlib.sha256(f"{world.key}-{i}".encode()).hexdigest(),
                target_ratings=args.pilot_raters if pilot else args.raters,
                shuffle=int(shuffle[i]),
            )
        )
    images = Image.objects.bulk_create(rows, batch_size=2000)
    ids = np.asarray([im.pk for im in images])
    Embedding.objects.bulk_create(
        [
            Embedding(
                image_id=int(ids[i]),
                backbone=BACKBONE,
                dim=args.dim,
                vector=to_blob(world.x[i]),
                weights_loaded=True,
            )
            for i in range(world.x.shape[0])
        ],
        batch_size=2000,
    )
    people = [
        ann.annotator_create(source=SIM_SOURCE, external_id=f"{world.key}-{a}")
        for a in range(world.w.shape[0])
    ]
    # The pilot: each pilot image rated by pilot_raters pilot annotators, rows
    # and counters as the engine leaves them (full images are never dealt).
    rng = np.random.default_rng(7)
    from django.utils import timezone

    now = timezone.now()
    ass, rat = [], []
    for i in world.pilot:
        for a in rng.choice(args.pilot_annotators, args.pilot_raters, replace=False):
            ass.append(
                Assignment(
                    study=study,
                    image_id=int(ids[i]),
                    annotator=people[a],
                    status="submitted",
                    leased_at=now,
                    expires_at=now + timezone.timedelta(seconds=60),
                    finished_at=now,
                )
            )
    Assignment.objects.bulk_create(ass, batch_size=2000)
    for x in ass:
        i = int(np.flatnonzero(ids == x.image_id)[0])
        a = people.index(x.annotator)
        rat.append(
            Rating(
                study=study,
                image_id=x.image_id,
                annotator=x.annotator,
                assignment=x,
                score=world.score(i, a),
                split=split_assign(
                    image_key=images[i].sha256, annotator_key=x.annotator.split_key
                ),
            )
        )
    Rating.objects.bulk_create(rat, batch_size=2000)
    Image.objects.filter(pk__in=ids[world.pilot].tolist()).update(
        rating_count=args.pilot_raters
    )
    sims = people[args.pilot_annotators :]
    for who in sims:
        ann.participation_consent(annotator=who, study=study, token=study.invite_token)
    if policy == "adaptive":
        dealing_policy_set(
            study=study, policy="adaptive", warmup=args.warmup, band=band
        )
    return study, ids, people


def _train(study, seed: int):
    from rewardmodel import services as rm

    run = rm.training_run_execute(
        run_id=rm.training_run_create(
            study=study,
            promote="always",
            config={"seed": seed, "backbone": BACKBONE, "ks": [0, 5]},
        ).pk
    )
    if run.status != "succeeded":
        raise RuntimeError(f"training failed: {run.error}")
    return run.version


def _accuracy(version, who, probe_ids, utility) -> float:
    from rewardmodel import inference

    got = inference.predict(annotator=who, image_ids=probe_ids, version=version)
    pred = np.asarray([got["scores"][i] for i in probe_ids])
    iu = np.triu_indices(len(probe_ids), 1)
    dp = np.sign(pred[:, None] - pred[None, :])[iu]
    du = np.sign(utility[:, None] - utility[None, :])[iu]
    keep = du != 0
    return float(np.mean(np.where(dp[keep] == 0, 0.5, dp[keep] == du[keep])))


def run_policy(args, world, policy: str, band: int, seed: int, tag: str) -> dict:
    from annotation import services as ann
    from annotation.models import Image, Rating
    from rewardmodel import dealing

    study, ids, people = _setup_study(args, world, policy, band, tag)
    sims = list(range(args.pilot_annotators, len(people)))
    probe_ids = [int(i) for i in ids[world.probe]]
    index = {int(pk): i for i, pk in enumerate(ids)}
    version = _train(study, seed)  # version 0: the pilot
    ann.engine_seed(seed=seed)  # fullest-first's draws alike in every policy's run
    schedule = [int(k) for k in args.schedule.split(",")]
    rng = np.random.default_rng(seed + 1)
    curve, tick, t0 = {}, 0, time.monotonic()
    given = dict.fromkeys(sims, 0)
    while True:
        tick += 1
        moved = False
        for a in rng.permutation(sims):
            who = people[a]
            lease = ann.assignment_claim(annotator=who, study=study)
            if not lease:
                continue
            i = index[lease[0].image_id]
            ann.rating_submit(
                assignment_id=lease[0].pk, annotator=who, score=world.score(i, a)
            )
            given[a] += 1
            moved = True
            if policy == "adaptive" and given[a] % args.refresh_every == 0:
                dealing.dealing_refresh(study_id=study.pk, annotator_ids=[who.pk])
        if not moved:
            break
        if tick in schedule:
            version = _train(study, seed)
            if policy == "adaptive":
                dealing.dealing_refresh(study_id=study.pk)
            curve[tick] = [
                _accuracy(version, people[a], probe_ids, world.u[world.probe, a])
                for a in sims
            ]
    ticks = tick - 1
    images = Image.objects.filter(study=study, pk__in=ids[world.open].tolist())
    exact = all(im.rating_count == args.raters for im in images)
    drift = ann.integrity_check(study_id=study.pk)
    _retire(people, tag)
    return {
        "policy": policy if policy == "fullest-first" else f"adaptive:{band}",
        "seed": seed,
        "curve": {str(k): v for k, v in curve.items()},
        "given": [given[a] for a in sims],
        "ticks_to_finish": ticks,
        "every_image_at_target": exact and drift.ok,
        "ratings": Rating.objects.filter(study=study).count(),
        "dealt": _dealt(study, ids[world.open].tolist()),
        "seconds": round(time.monotonic() - t0, 1),
    }


def _retire(people, tag: str) -> None:
    """Free the run's external ids (unique per source) for the next policy's run
    of the same world; its ratings keep the splits they were given."""
    from django.db.models import Value
    from django.db.models.functions import Concat

    from annotation.models import Annotator

    Annotator.objects.filter(pk__in=[p.pk for p in people]).update(
        external_id=Concat("external_id", Value(f"~{tag}"))
    )


def _dealt(study, open_ids) -> dict:
    from django.db.models import Count

    from annotation.models import Assignment

    return dict(
        Assignment.objects.filter(study=study, image_id__in=open_ids)
        .values_list("dealt_by")
        .annotate(n=Count("pk"))
        .order_by()
    )


# --- figures -----------------------------------------------------------------


def ci95(values) -> tuple[float, float, float]:
    v = np.asarray(values, float)
    m = float(v.mean())
    h = 1.96 * float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else 0.0
    return m, m - h, m + h


def summarise(runs: list[dict], schedule: list[int]) -> dict:
    """Per scenario × policy: curve (mean, ci) per k pooled over seeds, paired
    difference with fullest-first per k, ratings to reach fullest-first's final
    accuracy, ticks to finish."""
    out = {}
    for scenario in sorted({r["scenario"] for r in runs}):
        mine = [r for r in runs if r["scenario"] == scenario]
        base = {r["seed"]: r for r in mine if r["policy"] == "fullest-first"}
        for policy in dict.fromkeys(r["policy"] for r in mine):
            rs = [r for r in mine if r["policy"] == policy]
            cur, diff = {}, {}
            for k in schedule:
                vals = [v for r in rs for v in r["curve"].get(str(k), [])]
                if vals:
                    cur[k] = ci95(vals)
                pairs = [
                    a - b
                    for r in rs
                    if r["seed"] in base
                    for a, b in zip(
                        r["curve"].get(str(k), []),
                        base[r["seed"]]["curve"].get(str(k), []),
                        strict=True,
                    )
                ]
                if pairs:
                    diff[k] = ci95(pairs)
            out[(scenario, policy)] = {
                "curve": cur,
                "diff": diff,
                "ticks": [r["ticks_to_finish"] for r in rs],
                "exact": all(r["every_image_at_target"] for r in rs),
                "given": ci95([g for r in rs for g in r["given"]]),
            }
    for (scenario, _policy), s in out.items():
        ff = out.get((scenario, "fullest-first"))
        if ff is None or not ff["curve"] or not s["curve"]:
            continue
        final_k = max(ff["curve"])
        target = ff["curve"][final_k][0]
        reach = [k for k in sorted(s["curve"]) if s["curve"][k][0] >= target]
        s["reach_ff_final_at"] = reach[0] if reach else None
        s["ff_final_k"] = final_k
        s["ticks_vs_ff"] = float(np.mean(s["ticks"]) / np.mean(ff["ticks"]))
    return out


# Student t 0.975 quantiles by degrees of freedom (no scipy here).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
T975 += (2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)


def seed_ci95(values) -> tuple[float, float, float]:
    """Mean and t interval over a few seeds (between-run variation included)."""
    v = np.asarray(values, float)
    m = float(v.mean())
    t = T975[v.size - 2] if v.size - 1 <= len(T975) else 1.96
    h = t * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m, m - h, m + h


def seed_lines(runs: list[dict], schedule: list[int]) -> str:
    """The issue's criteria per seed, as "n of N seeds": adaptive reaches
    fullest-first's final accuracy with at least 30% fewer ratings; or is at
    least 0.02 higher at the final k; time to finish within 10%."""
    lines = ["", "Per seed (adaptive vs fullest-first, same annotators):"]
    total = met_all = held_all = 0
    for scenario in sorted({r["scenario"] for r in runs}):
        mine = [r for r in runs if r["scenario"] == scenario]
        base = {r["seed"]: r for r in mine if r["policy"] == "fullest-first"}
        for policy in dict.fromkeys(r["policy"] for r in mine):
            if policy == "fullest-first":
                continue
            fewer = higher = timely = n = met = met_held = 0
            diffs = []
            for r in (r for r in mine if r["policy"] == policy):
                ff = base.get(r["seed"])
                if ff is None or not ff["curve"] or not r["curve"]:
                    continue
                n += 1
                last = str(max(map(int, ff["curve"])))
                target = float(np.mean(ff["curve"][last]))
                reach = [
                    int(k)
                    for k in sorted(r["curve"], key=int)
                    if np.mean(r["curve"][k]) >= target
                ]
                early = bool(reach) and reach[0] <= 0.7 * int(last)
                # "reaches and stays": at or above it at every later k too
                # (the curves are not monotone: selection re-chooses at
                # every retrain).
                held = [
                    k
                    for k in reach
                    if all(
                        np.mean(r["curve"][j]) >= target
                        for j in r["curve"]
                        if int(j) >= k
                    )
                ]
                early_held = bool(held) and held[0] <= 0.7 * int(last)
                diff = np.mean(r["curve"][last]) - target
                diffs.append(diff)
                on_time = r["ticks_to_finish"] <= 1.1 * ff["ticks_to_finish"]
                ok = on_time and r["every_image_at_target"]
                fewer += early
                higher += diff >= 0.02
                timely += on_time
                met += ok and (early or diff >= 0.02)
                met_held += ok and (early_held or diff >= 0.02)
                lines.append(
                    f"  {scenario} {policy} seed {r['seed']}: final "
                    f"{np.mean(r['curve'][last]):.3f} vs {target:.3f} "
                    f"({diff:+.3f}); reaches it at "
                    f"{reach[0] if reach else 'never'} of {last}; ticks "
                    f"{r['ticks_to_finish']} vs {ff['ticks_to_finish']}"
                )
            lines.append(
                f"  {scenario} {policy}: >=30% fewer ratings in {fewer} of {n} "
                f"seeds; >=0.02 higher at the quota in {higher} of {n}; time to "
                f"finish within 10% in {timely} of {n}"
            )
            lines.append(
                f"  {scenario} {policy}: target met (either, every image at "
                f"target, time within 10%) in {met} of {n} seeds; reading "
                f"'reaches' as 'reaches and stays' in {met_held} of {n}"
            )
            if n > 1:
                m, lo, hi = seed_ci95(diffs)
                lines.append(
                    f"  {scenario} {policy}: difference at the quota over the {n} "
                    f"seeds (each seed's mean over annotators; Student t 95%): "
                    f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                )
            total, met_all, held_all = total + n, met_all + met, held_all + met_held
    lines.append(
        f"  all scenarios: target met in {met_all} of {total} (scenario, seed) "
        f"runs; 'reaches and stays' in {held_all} of {total}"
    )
    return "\n".join(lines)


def fmt(c) -> str:
    return f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]"


def table(summary: dict, schedule: list[int]) -> str:
    lines = [
        "| scenario | policy | "
        + " | ".join(f"k={k}" for k in schedule)
        + " | reaches FF final at | ticks to finish (vs FF) | every image at target |",
        "| --- | --- | " + " | ".join("---" for _ in schedule) + " | --- | --- | --- |",
    ]
    for (scenario, policy), s in summary.items():
        cells = [fmt(s["curve"][k]) if k in s["curve"] else "" for k in schedule]
        reach = s.get("reach_ff_final_at")
        lines.append(
            f"| {scenario} | {policy} | "
            + " | ".join(cells)
            + f" | {reach if reach is not None else 'not reached'}"
            f" of {s.get('ff_final_k', '')}"
            f" | {np.mean(s['ticks']):.1f} ({s.get('ticks_vs_ff', 1.0):.2f}×)"
            f" | {'yes' if s['exact'] else 'NO'} |"
        )
    lines += [
        "",
        "Paired difference with fullest-first (same annotators and seeds):",
        "",
    ]
    lines.append(
        "| scenario | policy | " + " | ".join(f"k={k}" for k in schedule) + " |"
    )
    lines.append("| --- | --- | " + " | ".join("---" for _ in schedule) + " |")
    for (scenario, policy), s in summary.items():
        if policy == "fullest-first":
            continue
        cells = [
            f"{s['diff'][k][0]:+.3f} [{s['diff'][k][1]:+.3f}, {s['diff'][k][2]:+.3f}]"
            if k in s["diff"]
            else ""
            for k in schedule
        ]
        lines.append(f"| {scenario} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw(summary: dict, path: str) -> None:
    """The curves as a PNG with matplotlib when it is installed, else as a
    small SVG written by hand (``path``'s suffix is changed to .svg)."""
    try:
        import matplotlib
    except ImportError:
        Path(path).with_suffix(".svg").write_text(svg(summary))
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({s for s, _ in summary})
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4))
    for ax, scenario in zip(np.atleast_1d(axes), scenarios, strict=True):
        for (sc, policy), s in summary.items():
            if sc != scenario or not s["curve"]:
                continue
            ks = sorted(s["curve"])
            ax.plot(ks, [s["curve"][k][0] for k in ks], marker="o", label=policy)
            lo, hi = ([s["curve"][k][j] for k in ks] for j in (1, 2))
            ax.fill_between(ks, lo, hi, alpha=0.2)
        ax.set_title(f"{scenario} tastes")
        ax.set_xlabel("ratings given per annotator")
        ax.set_ylabel("probe pairwise accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def svg(summary: dict) -> str:
    """One panel per scenario: mean accuracy per k and its 95% band."""
    scenarios = sorted({s for s, _ in summary})
    w, h, pad = 360, 260, 46
    vals = [v for s in summary.values() for c in s["curve"].values() for v in c[1:]]
    ks = sorted({k for s in summary.values() for k in s["curve"]})
    if not vals or not ks:
        return '<svg xmlns="http://www.w3.org/2000/svg"/>'
    lo, hi = min(vals) - 0.01, max(vals) + 0.01
    k0, k1 = ks[0], max(ks[-1], ks[0] + 1)

    def xy(k, v, panel):
        x = panel * w + pad + (k - k0) / (k1 - k0) * (w - 2 * pad)
        return x, h - pad - (v - lo) / (hi - lo) * (h - 2 * pad)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(scenarios)}" '
        f'height="{h}" font-family="sans-serif" font-size="11">'
    ]
    for p, scenario in enumerate(scenarios):
        x0, y0 = xy(k0, lo, p)
        x1, y1 = xy(k1, hi, p)
        out.append(
            f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" '
            'fill="none" stroke="#999"/>'
            f'<text x="{x0}" y="{y1 - 8}">{scenario} tastes: probe pairwise '
            "accuracy vs ratings given</text>"
            f'<text x="{x0 - 4}" y="{y0 + 4}" text-anchor="end">{lo:.2f}</text>'
            f'<text x="{x0 - 4}" y="{y1 + 4}" text-anchor="end">{hi:.2f}</text>'
        )
        for k in ks:
            x, _ = xy(k, lo, p)
            out.append(f'<text x="{x}" y="{y0 + 14}" text-anchor="middle">{k}</text>')
        mine = [(pol, s) for (sc, pol), s in summary.items() if sc == scenario]
        for n, (policy, s) in enumerate(mine):
            colour = COLOURS[n % len(COLOURS)]
            pts = sorted(s["curve"].items())
            band = [xy(k, c[2], p) for k, c in pts] + [
                xy(k, c[1], p) for k, c in reversed(pts)
            ]
            line = [xy(k, c[0], p) for k, c in pts]
            out.append(
                '<polygon points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in band)
                + f'" fill="{colour}" fill-opacity="0.15"/>'
                '<polyline points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in line)
                + f'" fill="none" stroke="{colour}" stroke-width="2"/>'
                f'<text x="{x0 + 8}" y="{y1 + 16 + 14 * n}" fill="{colour}">'
                f"{policy}</text>"
            )
    return "\n".join([*out, "</svg>"])


SIM_SOURCE = "sim"  # the simulated annotators' source (their split keys)
BACKBONE = "synthetic:dealing"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        runs = json.loads(Path(args.from_json).read_text())["runs"]
        return report(args, runs)
    data = tempfile.mkdtemp(prefix="palate-dealing-")
    from benchmarks._common import setup_django

    # Its own database, so a --tiny run (the test) never meets a full run's.
    suffix = "dealing_tiny" if args.tiny else "dealing"
    connection, old_name = setup_django(data, suffix)
    try:
        return _main(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _main(args) -> int:
    fresh = [secrets.randbelow(10**6) + 1000 for _ in range(args.fresh)]
    seeds = list(range(1, args.seeds + 1)) + fresh
    print(f"seeds: {seeds} (drawn at run time: {fresh})", flush=True)
    runs = []
    for scenario in args.scenarios.split(","):
        for seed in seeds:
            world = World(args, seed, scenario)
            for spec in args.policies.split(","):
                policy, _, band = spec.partition(":")
                tag = f"{scenario}-{seed}-{policy}-{band or 0}"
                r = run_policy(args, world, policy, int(band or 0), seed, tag)
                r["scenario"] = scenario
                runs.append(r)
                if args.json:  # after every run: a late failure loses nothing
                    Path(args.json).write_text(
                        json.dumps(
                            {
                                "seeds": seeds,
                                "fresh": fresh,
                                "args": vars(args),
                                "runs": runs,
                            }
                        )
                    )
                last = r["curve"][str(max(map(int, r["curve"])))] if r["curve"] else []
                print(
                    f"{scenario} seed {seed} {r['policy']}: "
                    f"ticks {r['ticks_to_finish']}, final acc {np.mean(last):.3f}, "
                    f"exact {r['every_image_at_target']}, dealt {r['dealt']}, "
                    f"{r['seconds']} s",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"seeds": seeds, "fresh": fresh, "args": vars(args), "runs": runs}
            )
        )
    return report(args, runs)


def report(args, runs: list[dict]) -> int:
    schedule = [int(k) for k in args.schedule.split(",")]
    summary = summarise(runs, schedule)
    print(table(summary, schedule))
    print(seed_lines(runs, schedule))
    if args.png:
        draw(summary, args.png)
    return 0 if all(s["exact"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
