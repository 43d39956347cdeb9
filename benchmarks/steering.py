"""Steering benchmark: does optimising a prompt with the personalised model move
the image toward the *true* taste of a simulated annotator it never saw?

Offline set-up, all through the product's own code paths:

1. A study of procedural images (``--train-images``; prompts = a subject plus 0-3
   random phrases of the steering vocabulary, as a lab's prompt list would vary
   style) rated by ``--annotators`` simulated annotators through the real
   assignment engine, ``--raters`` ratings per image.
2. Simulated taste lives on **generic image features** computed here (tone, colour
   moments, colourfulness, saturation-weighted hue histogram, a 3×3 layout of
   luminance and saturation, edge and detail statistics of a 64 px thumbnail),
   standardised over the study's images: ``t_a(x) = w_a · z(x)``, with
   ``w_a = shared + individual`` (random directions, seeded). Nothing of the
   procedural generator's hidden attributes or rendering steps is used. Ratings =
   round(4 + 1.4 (t + noise)) on 1-7.
3. The real training run (``training_run_create`` + ``execute``, backbone
   ``--backbone``) gives the personalised model; the optimiser sees only it.
4. Probe (``--probe`` new images per test subject): does the model see taste on
   images nobody rated? Within-subject correlation with the true taste of the
   model, the population score and a noise-free linear read-out of the same
   embedding (the backbone's ceiling).
5. For each of ``--optimise`` annotators and ``--prompts`` unseen base prompts
   (subjects not used in the study), three runs of the *same*
   ``optimization_run`` service, same proposer, seed and image budget (the
   product's defaults), differing only in the objective:
   **model** (the personalised model, the product's scorer), **oracle** (the
   simulated true taste, noise-free) and **population** (the model's population
   score alone). With ``--compare-caution`` (default 0), a fourth run of the
   model at that caution: a paired comparison of the product's ranking penalty
   (same study, model and renders).

Printed: true score of the base image and of each run's kept image, gains, the
model's gain as a share of the oracle's, the population objective's gain, the
true-score win rate and a simulated blind test (each annotator picks, with their
rating noise, between the base and the optimised image). 95% intervals by
bootstrap over annotators. Targets: model wins for ≥ 75% of annotators in the
blind test; model gain ≥ half the oracle's. Exit 1 when a target is missed.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/palate_x \\
        .venv/bin/python benchmarks/steering.py
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import setup_django  # noqa: E402

TRAIN_SUBJECTS = (
    "a lighthouse",
    "a bowl of fruit",
    "a mountain village",
    "a city street",
    "a cat on a windowsill",
    "a sailing boat",
    "an old library",
    "a forest path",
    "a bicycle",
    "a desert road",
    "a harbour",
    "a garden",
    "a train station",
    "a bridge over a river",
    "a market stall",
    "a castle",
    "a field of wheat",
    "a kitchen table",
    "a jazz club",
    "a greenhouse",
    "a waterfall",
    "a rooftop",
    "a fishing village",
    "a cathedral",
    "a vintage car",
    "a bookshop",
    "a horse in a meadow",
    "a snowy cabin",
    "a carousel",
    "a chess board",
)
TEST_SUBJECTS = (
    "a fox in a clearing",
    "a teapot",
    "a lakeside pier",
    "an owl on a branch",
    "a violin",
    "a canyon",
    "a windmill",
    "a street musician",
    "a coral reef",
    "a tram",
    "a hot air balloon",
    "a tiger",
    "a farmhouse",
    "a swan on a pond",
    "a clock tower",
    "a lantern",
    "a sunflower",
    "a pair of boots",
    "a lighthouse keeper",
    "a stone bridge",
    "a mountain goat",
    "a piano",
    "a glass of wine",
    "a dragonfly",
    "a parrot",
    "a red barn",
    "a ferry",
    "a cactus",
    "a cello",
    "a snowman",
)


def generic_features(data: bytes) -> np.ndarray:
    """Classic, generator-agnostic image statistics of a 64 px thumbnail."""
    from PIL import Image

    im = Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64))
    rgb = np.asarray(im, dtype=np.float64) / 255
    hsv = np.asarray(im.convert("HSV"), dtype=np.float64) / 255
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    hue, sat = hsv[..., 0] * 2 * np.pi, hsv[..., 1]
    rg, yb = r - g, 0.5 * (r + g) - b
    colourful = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    f = [lum.mean(), lum.std(), *np.percentile(lum, [5, 50, 95])]
    f += [sat.mean(), sat.std(), rg.mean(), yb.mean(), colourful]
    hist, _ = np.histogram(hue, bins=8, range=(0, 2 * np.pi), weights=sat)
    f += list(hist / (sat.sum() + 1e-9))
    for arr in (lum, sat):
        f += [
            blk.mean()
            for row in np.array_split(arr, 3)
            for blk in np.array_split(row, 3, axis=1)
        ]
    gy, gx = np.gradient(lum)
    mag = np.hypot(gx, gy)
    lap = np.abs(
        4 * lum[1:-1, 1:-1]
        - lum[:-2, 1:-1]
        - lum[2:, 1:-1]
        - lum[1:-1, :-2]
        - lum[1:-1, 2:]
    )
    f += [
        mag.mean(),
        (mag > 0.05).mean(),
        lap.mean(),
        np.abs(gx).mean() / (np.abs(gy).mean() + 1e-9),
    ]
    return np.asarray(f, dtype=np.float64)


class Taste:
    """Simulated annotators: linear taste on standardised generic features."""

    def __init__(self, pool: np.ndarray, n: int, seed: int, noise: float):
        rng = np.random.default_rng(seed)
        self.mu, self.sd = pool.mean(0), pool.std(0) + 1e-9
        d = pool.shape[1]
        shared = rng.normal(size=d) / np.sqrt(d)
        self.w = 0.6 * shared + 0.8 * rng.normal(size=(n, d)) / np.sqrt(d)
        z = (pool - self.mu) / self.sd
        self.w /= (z @ self.w.T).std(0)[:, None]  # unit variance over the pool
        self.noise = noise
        self._cache: dict = {}

    def z(self, data: bytes) -> np.ndarray:
        return (generic_features(data) - self.mu) / self.sd

    def true(self, i: int, image) -> float:
        if image.pk not in self._cache:
            with image.file.open("rb") as fh:
                self._cache[image.pk] = self.z(fh.read())
        return float(self.w[i] @ self._cache[image.pk])


def _study(args, rng):
    from annotation import services as ann
    from generation import services as gen
    from steering.vocab import VOCABULARY

    study = ann.study_create(
        name="Steering benchmark",
        slug="steering-bench",
        status="open",
        raters_per_image=args.raters,
        quota_per_annotator=100_000,
    )
    cats = list(VOCABULARY)
    prompts = []
    for i in range(args.train_images):
        subject = TRAIN_SUBJECTS[i % len(TRAIN_SUBJECTS)]
        k = int(rng.integers(0, 4))
        picks = rng.choice(len(cats), size=k, replace=False)
        mods = [
            VOCABULARY[cats[c]][int(rng.integers(len(VOCABULARY[cats[c]])))]
            for c in picks
        ]
        prompts.append({"text": ", ".join([subject, *mods]), "domain": "bench"})
    prompts = list({p["text"]: p for p in prompts}.values())
    gen.demo_images_generate(study=study, prompts=prompts, per_prompt=1)
    annotators = [ann.annotator_create() for _ in range(args.annotators)]
    return study, annotators


def _rate(study, annotators, taste: Taste, rng) -> int:
    from annotation import services as ann

    for a in annotators:  # members, as if they had opened the study's link
        ann.participation_consent(annotator=a, study=study, token=study.invite_token)
    n = 0
    active = list(range(len(annotators)))
    while active:
        rng.shuffle(active)
        still = []
        for i in active:
            leases = ann.assignment_claim(annotator=annotators[i], study=study)
            if not leases:
                continue
            lease = leases[0]
            t = taste.true(i, lease.image)
            raw = 4 + 1.4 * (t + rng.normal(0, taste.noise))
            ann.rating_submit(
                assignment_id=lease.pk,
                annotator=annotators[i],
                score=int(np.clip(np.rint(raw), 1, 7)),
            )
            n += 1
            still.append(i)
        active = still
    return n


class TrueScorer:
    """The oracle's objective: the simulated taste itself, noise-free."""

    label = "oracle (simulated taste)"

    def __init__(self, taste: Taste, i: int):
        self.taste, self.i = taste, i

    def score(self, ids):
        from annotation.models import Image
        from steering.scoring import Scores

        images = Image.objects.in_bulk(ids)
        t = [self.taste.true(self.i, images[i]) for i in ids]
        return Scores(t, t, 0)


class PopulationObjective:
    """Optimise the population score alone (what steering without
    personalisation would reach)."""

    def __init__(self, inner):
        self.inner, self.version = inner, inner.version
        self.label = "population objective, " + inner.label

    def score(self, ids):
        from steering.scoring import Scores

        s = self.inner.score(ids)
        return Scores(s.population, s.population, s.ms)


def _run(annotator, prompt, args, scorer=None, caution=None):
    from steering import selectors, services

    opt = services.optimization_create(
        annotator=annotator,
        base_prompt=prompt,
        rounds=args.rounds,
        per_round=args.per_round,
        max_images=args.max_images,
        proposer=args.proposer,
        seed=args.seed,
        caution=args.caution if caution is None else caution,
        enqueue=False,
    )
    services.optimization_run(optimization_id=opt.pk, scorer=scorer)
    opt.refresh_from_db()
    assert opt.status == "done", opt.error
    return selectors.optimization_best(opt)


def _probe(study, annotators, taste: Taste, version, args, rng) -> dict:
    """Does the model see taste on *new* images at all? Random vocabulary variants
    of the test subjects (images nobody rated, as steering's candidates are):
    per annotator and subject, the Pearson correlation between the model's
    prediction and the simulated true taste, averaged. Next to it, the same for
    the population score and for a noise-free linear read-out of the same
    embedding (ridge from the embedding to the true taste of the study's images:
    the most any linear head on this backbone could see)."""
    from annotation import services as ann
    from annotation.models import Image
    from generation import services as gen
    from rewardmodel import embeddings, inference
    from rewardmodel.embeddings import embedding_rows
    from steering.vocab import CATEGORIES, VOCABULARY, compose

    probe = ann.study_create(
        name="Steering probe",
        slug="steering-probe",
        status="closed",
        raters_per_image=1,
        quota_per_annotator=1,
    )
    prompts = []
    for s in range(args.optimise):
        subject, seen = TEST_SUBJECTS[s % len(TEST_SUBJECTS)], set()
        while len(seen) < args.probe:
            k = int(rng.integers(1, 5))
            cats = rng.choice(len(CATEGORIES), size=k, replace=False)
            state = {
                CATEGORIES[c]: VOCABULARY[CATEGORIES[c]][
                    int(rng.integers(len(VOCABULARY[CATEGORIES[c]])))
                ]
                for c in cats
            }
            text = compose(subject, state)
            if text not in seen:
                seen.add(text)
                prompts.append({"text": text, "domain": str(s)})
    gen.demo_images_generate(study=probe, prompts=prompts, per_prompt=1)
    images = list(Image.objects.filter(study=probe).order_by("pk"))
    ids = [im.pk for im in images]
    subject = np.asarray([int(im.domain) for im in images])
    embeddings.embeddings_compute(backbone=version.backbone, image_ids=ids)
    true = np.asarray(
        [[taste.true(i, im) for im in images] for i in range(len(annotators))]
    )
    pred = np.asarray(
        [
            [
                inference.predict(annotator=a, image_ids=ids, version=version)[
                    "scores"
                ][j]
                for j in ids
            ]
            for a in annotators
        ]
    )
    # Population score as steering's: the mean prediction of the other raters.
    pop = (pred.sum(0, keepdims=True) - pred) / (len(annotators) - 1)
    train = list(Image.objects.filter(study=study).order_by("pk"))
    _, temb = embedding_rows(
        backbone=version.backbone, image_ids=[im.pk for im in train]
    )
    _, pemb = embedding_rows(backbone=version.backbone, image_ids=ids)
    mu, sd = temb.mean(0), temb.std(0) + 1e-6
    xt = np.hstack([(temb - mu) / sd, np.ones((len(temb), 1))])
    xp = np.hstack([(pemb - mu) / sd, np.ones((len(pemb), 1))])
    t_train = np.asarray(
        [[taste.true(i, im) for im in train] for i in range(len(annotators))]
    )
    beta = np.linalg.solve(xt.T @ xt + np.eye(xt.shape[1]), xt.T @ t_train.T)
    ceiling = (xp @ beta).T

    def within(p):
        out = []
        for i in range(args.optimise):  # the annotators the runs optimise for
            for s in np.unique(subject):
                m = subject == s
                out.append(np.corrcoef(p[i, m], true[i, m])[0, 1])
        return np.asarray(out)

    return {
        "model": within(pred),
        "population": within(pop),
        "ceiling": within(ceiling),
        "n": len(ids),
    }


def _compare(i: int, a, prompt: str, taste: Taste, study, args) -> dict:
    """The three objectives for one annotator and base prompt, same search."""
    from steering.scoring import RewardModelScorer

    base, best = _run(a, prompt, args)
    _, oracle = _run(a, prompt, args, scorer=TrueScorer(taste, i))
    inner = RewardModelScorer(annotator=a, study=study)
    _, popb = _run(a, prompt, args, scorer=PopulationObjective(inner))
    t_base = taste.true(i, base.image)
    row = {}
    if _compares(args):  # the same model at another caution: a paired A/B
        _, alt = _run(a, prompt, args, caution=args.compare_caution)
        row["model_alt"] = taste.true(i, alt.image) - t_base
    row |= {
        "base": t_base,
        "model": taste.true(i, best.image) - t_base,
        "oracle": taste.true(i, oracle.image) - t_base,
        "population": taste.true(i, popb.image) - t_base,
        "pred_gain": best.personal - base.personal,
        "pop_change": best.population - base.population,
        "prompt": best.prompt,
    }
    print(
        f"  annotator {i:>2} {prompt!r:28} true gain model "
        f"{row['model']:+.2f} oracle {row['oracle']:+.2f} population "
        f"{row['population']:+.2f} (predicted {row['pred_gain']:+.2f})"
    )
    return row


def _compares(args) -> bool:
    return args.compare_caution is not None and args.compare_caution != args.caution


def _ci(x: np.ndarray, rng, stat=np.mean) -> tuple[float, float]:
    """Bootstrap over the first axis (annotators: their runs move together)."""
    boots = [stat(x[rng.integers(0, len(x), len(x))]) for _ in range(2000)]
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def _fmt(x, rng, stat=np.mean, sign: str = "+") -> str:
    lo, hi = _ci(np.asarray(x), rng, stat)
    v = stat(np.asarray(x))
    return f"{v:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"


def _ratio(rows: np.ndarray) -> float:
    """Ratio of mean gains, [..., 0] over [..., 1], of a set of annotators' rows."""
    return float(np.mean(rows[..., 0]) / np.mean(rows[..., 1]))


def main() -> int:  # noqa: PLR0915 (one script, top to bottom)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-images", type=int, default=300)
    p.add_argument("--annotators", type=int, default=30)
    p.add_argument("--raters", type=int, default=10)
    p.add_argument("--optimise", type=int, default=20)
    p.add_argument(
        "--prompts", type=int, default=2, help="base prompts per optimised annotator"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--max-images", type=int, default=31)
    p.add_argument("--proposer", default="beam")
    p.add_argument(
        "--caution",
        type=float,
        default=None,
        help="ranking penalty in posterior sds (default: the product's; 0: none)",
    )
    p.add_argument(
        "--compare-caution",
        type=float,
        default=0.0,
        help="also run the model at this caution on the same study (paired "
        "comparison; default 0, the personal score alone; same as --caution: skip)",
    )
    p.add_argument("--backbone", default="open_clip:palate-tiny-vit")
    p.add_argument("--noise", type=float, default=0.6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--probe", type=int, default=15, help="new images per test subject (0: skip)"
    )
    args = p.parse_args()
    data_dir = tempfile.mkdtemp(prefix="palate-steer-")
    connection, old_name = setup_django(data_dir, "steering")
    from django.conf import settings

    from rewardmodel import services as rm
    from rewardmodel.metrics import pairwise_accuracy
    from steering.models import DEFAULT_CAUTION

    if args.caution is None:
        args.caution = DEFAULT_CAUTION

    settings.REWARDMODEL_BACKBONE = args.backbone
    # pixelstats is a benchmark-only diagnostic once it lives in benchmarks/.
    if args.backbone.startswith("pixelstats") and importlib.util.find_spec(
        "oracle_features"
    ):
        importlib.import_module("oracle_features").register()
    rng = np.random.default_rng(args.seed)
    try:
        t0 = time.monotonic()
        study, annotators = _study(args, rng)
        from annotation.models import Image

        images = list(Image.objects.filter(study=study))
        pool = []
        for im in images:
            with im.file.open("rb") as fh:
                pool.append(generic_features(fh.read()))
        taste = Taste(np.asarray(pool), len(annotators), args.seed + 1, args.noise)
        n_ratings = _rate(study, annotators, taste, rng)
        t_data = time.monotonic() - t0
        # Ceiling: how well the noise-free taste orders one annotator's ratings.
        from annotation.models import Rating

        ceil = []
        for i, a in enumerate(annotators):
            rows = list(Rating.objects.filter(annotator=a).select_related("image"))
            ceil.append(
                pairwise_accuracy(
                    np.asarray([r.score for r in rows], float),
                    np.asarray([taste.true(i, r.image) for r in rows]),
                )
            )
        t1 = time.monotonic()
        run = rm.training_run_create(
            study=study,
            promote="always",
            config={"backbone": args.backbone, "seed": args.seed},
        )
        run = rm.training_run_execute(run_id=run.pk)
        if run.status != "succeeded":
            print(f"training failed: {run.error}")
            return 2
        t_train = time.monotonic() - t1
        print(
            f"study: {len(images)} images, {n_ratings} ratings by {len(annotators)} "
            f"annotators ({t_data:.0f} s); simulator ceiling (pairwise) "
            f"{np.mean([c for c in ceil if c is not None]):.3f}; "
            f"training {t_train:.0f} s, backbone "
            f"{args.backbone}; model's primary metric (pairwise accuracy, "
            f"held-out images): {run.version.primary_metric}"
        )
        if args.probe:
            t3 = time.monotonic()
            prng = np.random.default_rng(args.seed + 7)
            pr = _probe(study, annotators, taste, run.version, args, prng)
            print(
                f"probe: {pr['n']} new images ({args.probe} random vocabulary "
                f"variants of each test subject, nobody rated them; "
                f"{time.monotonic() - t3:.0f} s): correlation with the true taste "
                "within a subject, mean [95% CI] over (annotator, subject):"
            )
            for k, label in (
                ("model", "personalised model        "),
                ("population", "population score          "),
                ("ceiling", "noise-free linear read-out"),
            ):
                print(f"  {label}: {_fmt(pr[k], rng)}")
        rows = []
        t2 = time.monotonic()
        for i in range(args.optimise):
            for k in range(args.prompts):
                prompt = TEST_SUBJECTS[(i + 7 * k) % len(TEST_SUBJECTS)]
                rows.append(_compare(i, annotators[i], prompt, taste, study, args))
        t_opt = time.monotonic() - t2
        # (annotator, base prompt) arrays: intervals resample annotators.
        shape = (args.optimise, args.prompts)
        g = {
            k: np.asarray([r[k] for r in rows]).reshape(shape)
            for k in rows[0]
            if k != "prompt"
        }
        wins = (g["model"] > 0).astype(float)
        # Simulated blind test: each annotator compares the two images once per
        # base prompt, with the same noise as their ratings on each image.
        brng = np.random.default_rng(args.seed + 99)
        noise = brng.normal(0, args.noise, size=(*shape, 2))
        blind = (g["model"] + noise[..., 0] > noise[..., 1]).astype(float)
        from math import erf

        expected = np.asarray(
            [0.5 * (1 + erf(x / (2 * args.noise))) for x in g["model"].ravel()]
        )  # P(win) = Φ(gain / (noise·√2))
        ratio = g["model"].mean() / g["oracle"].mean()
        pop_ratio = g["population"].mean() / g["oracle"].mean()
        print()
        both = np.stack([g["model"], g["oracle"]], axis=-1)
        pboth = np.stack([g["population"], g["oracle"]], axis=-1)
        print(
            f"annotators optimised: {args.optimise} × {args.prompts} base "
            f"prompt(s) = {len(rows)} runs per objective; budget "
            f"{args.max_images} images per run ({args.rounds} rounds × "
            f"{args.per_round}, proposer {args.proposer}, caution {args.caution:g}); "
            f"optimisation {t_opt:.0f} s"
        )
        print(
            "true-score gain over the base image (taste units = 1 sd over the "
            "study's images), mean [95% CI]:"
        )
        print(f"  personalised model : {_fmt(g['model'], rng)}")
        print(f"  oracle (true taste): {_fmt(g['oracle'], rng)}")
        print(f"  population only    : {_fmt(g['population'], rng)}")
        lo, hi = _ci(both, rng, _ratio)
        print(f"model gain / oracle gain      : {ratio:.2f} [{lo:.2f}, {hi:.2f}]")
        lo, hi = _ci(pboth, rng, _ratio)
        print(f"population gain / oracle gain : {pop_ratio:.2f} [{lo:.2f}, {hi:.2f}]")
        print(f"true-score win rate (model)   : {_fmt(wins, rng, sign='')}")
        print(
            f"simulated blind test win rate : {_fmt(blind, rng, sign='')} "
            f"(expected {expected.mean():.3f})"
        )
        print(
            f"population score change of the model's pick: {_fmt(g['pop_change'], rng)}"
        )
        if _compares(args):
            alt = g["model_alt"]
            alt_blind = (alt + noise[..., 0] > noise[..., 1]).astype(float)
            alt_exp = np.mean(
                [0.5 * (1 + erf(x / (2 * args.noise))) for x in alt.ravel()]
            )
            lo, hi = _ci(np.stack([alt, g["oracle"]], axis=-1), rng, _ratio)
            print(
                f"same model, caution {args.compare_caution:g} (paired): gain "
                f"{_fmt(alt, rng)}, / oracle {alt.mean() / g['oracle'].mean():.2f} "
                f"[{lo:.2f}, {hi:.2f}], blind test {alt_blind.mean():.3f} "
                f"(expected {alt_exp:.3f}); caution {args.caution:g} minus caution "
                f"{args.compare_caution:g}: {_fmt(g['model'] - alt, rng)}"
            )
        ok = blind.mean() >= 0.75 and ratio >= 0.5
        print(
            "targets (blind win ≥ 0.75, gain ≥ half the oracle's):",
            "met" if ok else "MISSED",
        )
        return 0 if ok else 1
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
