"""Reward-model speed: training, prediction and embedding throughput.

1. Training: 70,000 ratings over 5,000 images by 350 annotators, with synthetic
   768-d embeddings written straight into the embedding cache (so no backbone
   runs). Times the real training run (snapshot from the database, selection on
   validation, test report with baselines, refit on everything, checkpoint) and
   reports the process's peak RSS.
2. Prediction in this process, which never imports torch (as the web process):
   ``rewardmodel.inference.predict`` for one annotator over all 5,000 images:
   the first (cold) call loads the checkpoint, the embeddings and the crowd, then
   the median (p50) and p90 of warm calls; then a newcomer rates one image at a
   time and predicts right after each rating (the head is re-adapted at once).
3. Embedding throughput of open_clip ViT-B-32 and ViT-L-14 with random weights
   (the real ``create_model_and_transforms`` path, preprocessing included), on the
   CPU with small batches, or on the GPU with ``--gpu`` (batch 256, bf16 autocast).

Runs in a throw-away test database. Usage::

    .venv/bin/python benchmarks/train_speed.py
    .venv/bin/python benchmarks/train_speed.py --only embed --gpu
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import setup_django  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--ratings", type=int, default=70_000)
    p.add_argument("--annotators", type=int, default=350)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--only", choices=["train", "embed"], help="run one part")
    p.add_argument("--gpu", action="store_true", help="embedding throughput on CUDA")
    p.add_argument("--cpu-batch", type=int, default=8)
    p.add_argument(
        "--similar",
        choices=["default", "on", "off", "lowrank"],
        default="default",
        help="the similar crowd member (training config 'similar'); default "
        "and lowrank: with the low-rank agreement prior [4, 5, 1, 0, 1]; on: "
        "shrunk toward one global mean",
    )
    return p.parse_args()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_train(args) -> dict:
    from annotation import services as ann
    from annotation.models import Image, Rating, Study
    from annotation.splits import split_assign
    from rewardmodel import inference, services
    from rewardmodel.embeddings import to_blob
    from rewardmodel.models import Embedding

    rng = np.random.default_rng(0)
    backbone = f"synthetic:{args.dim}"
    t0 = time.monotonic()
    study = ann.study_create(
        name="Speed",
        slug="speed",
        status=Study.Status.OPEN,
        raters_per_image=15,
        quota_per_annotator=10**6,
    )
    images = Image.objects.bulk_create(
        [
            Image(
                study=study,
                file=f"synthetic/{i}.png",
                sha256=f"{i:064x}",
                target_ratings=15,
            )
            for i in range(args.images)
        ],
        batch_size=2000,
    )
    emb = rng.normal(size=(args.images, args.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    Embedding.objects.bulk_create(
        [
            Embedding(
                image_id=im.pk,
                backbone=backbone,
                dim=args.dim,
                vector=to_blob(vec),
                weights_loaded=True,
            )
            for im, vec in zip(images, emb, strict=True)
        ],
        batch_size=2000,
    )
    annotators = [ann.annotator_create() for _ in range(args.annotators)]
    # Planted taste so the fit has something to find: shared + individual.
    directions = rng.normal(size=(8, args.dim)).astype(np.float32)
    feats = emb @ directions.T * 10
    taste = rng.normal(size=8) + rng.normal(size=(args.annotators, 8))
    per_image = args.ratings // args.images
    rows = []
    for i, im in enumerate(images):
        for a in rng.choice(args.annotators, per_image, replace=False):
            score = int(
                np.clip(np.rint(4 + feats[i] @ taste[a] / 3 + rng.normal(0, 0.5)), 1, 7)
            )
            rows.append(
                Rating(
                    study=study,
                    image_id=im.pk,
                    annotator=annotators[a],
                    score=score,
                    split=split_assign(
                        image_key=im.sha256, annotator_key=annotators[a].split_key
                    ),
                )
            )
    Rating.objects.bulk_create(rows, batch_size=5000)
    t_setup = time.monotonic() - t0

    rss_before = peak_rss_mb()
    cfg = {"backbone": backbone, "seed": 0}
    if args.similar == "lowrank":
        cfg["similar"] = [4, 5.0, 1, 0, 1]
    elif args.similar != "default":
        cfg["similar"] = args.similar == "on"
    run = services.training_run_create(study=study, config=cfg)
    t1, c1 = time.monotonic(), time.process_time()
    run = services.training_run_execute(run_id=run.pk)
    t_train, c_train = time.monotonic() - t1, time.process_time() - c1
    if run.status != "succeeded":
        raise SystemExit(f"training failed: {run.error}\n{run.log}")
    version = run.version
    fit_line = next(
        (ln for ln in version.log.splitlines() if "selected on validation" in ln), ""
    )
    who = annotators[0]  # the deployed version is refit on everyone
    # Someone who rated after training: adapted in closed form on every call.
    held_out = ann.annotator_create()
    Rating.objects.bulk_create(
        [
            Rating(
                study=study,
                image_id=im.pk,
                annotator=held_out,
                score=int(rng.integers(1, 8)),
                split=split_assign(
                    image_key=im.sha256, annotator_key=held_out.split_key
                ),
            )
            for im in images[:40]
        ]
    )
    ids = [im.pk for im in images]
    t2 = time.monotonic()
    inference.predict(annotator=who, image_ids=ids)
    t_cold = time.monotonic() - t2
    warm = []
    for _ in range(50):
        t3 = time.perf_counter()
        inference.predict(annotator=who, image_ids=ids)
        warm.append(time.perf_counter() - t3)
    rebuilt = []  # the first call after the crowd's 60 s rebuild (forced here)
    for _ in range(5):
        inference.load(version).crowd_built = -1e9
        t3 = time.perf_counter()
        inference.predict(annotator=who, image_ids=ids)
        rebuilt.append(time.perf_counter() - t3)
    adapted = []
    for _ in range(10):
        t3 = time.perf_counter()
        inference.predict(annotator=held_out, image_ids=ids)
        adapted.append(time.perf_counter() - t3)
    update, head_only = _newcomer_updates(study, held_out, images[40:80], ids, rng)
    if os.environ.get("PROFILE_PREDICT"):
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(10):
            inference.predict(annotator=who, image_ids=ids)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return {
        "ratings": len(rows),
        "images": args.images,
        "annotators": args.annotators,
        "dim": args.dim,
        "setup_s": t_setup,
        "train_run_s": t_train,
        "train_cpu_s": c_train,
        "load_average": os.getloadavg()[0],
        "fit_log": fit_line,
        "similar_weight": _similar_weight(version, who),
        "torch_imported": "torch" in sys.modules,
        "primary_metric": version.primary_metric,
        "peak_rss_mb_before_training": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "predict_cold_ms": t_cold * 1000,
        "predict_warm_median_ms": statistics.median(warm) * 1000,
        "predict_warm_p90_ms": sorted(warm)[int(0.9 * len(warm))] * 1000,
        "predict_after_crowd_rebuild_ms": statistics.median(rebuilt) * 1000,
        "predict_adapted_median_ms": statistics.median(adapted) * 1000,
        "newcomer_predict_after_rating_ms": _quantiles(update),
        "newcomer_update_ms": _quantiles(head_only),
    }


def _similar_weight(version, who) -> float | None:
    """The similar crowd's weight for ``who`` in the served model (None: the
    version has no such member), so a timing says whether it ran."""
    from rewardmodel import inference

    pred = inference.load(version)
    if pred.similar is None:
        return None
    return float(pred.model.hyper.blend_similar[pred.index[str(who.pk)]])


def _quantiles(values: list[float]) -> dict:
    ms = sorted(v * 1000 for v in values)
    return {"p50": statistics.median(ms), "p90": ms[int(0.9 * len(ms))], "n": len(ms)}


def _newcomer_updates(study, who, images, ids, rng) -> tuple[list, list]:
    """The newcomer rates one more image, then asks again (issue 26): the
    prediction right after each rating (stamp query, re-adaptation, scoring of
    every image), and the update alone (``Predictor.head`` after a rating: the
    stamp query, their ratings, the closed-form adaptation)."""
    from annotation.models import Rating
    from annotation.splits import split_assign
    from rewardmodel import inference

    def rate(im):
        Rating.objects.create(
            study=study,
            image_id=im.pk,
            annotator=who,
            score=int(rng.integers(1, 8)),
            split=split_assign(image_key=im.sha256, annotator_key=who.split_key),
        )

    after, head_only = [], []
    pred = inference.load(inference.version_for(image_ids=ids, annotator=who))
    if os.environ.get("PROFILE_UPDATE"):
        import cProfile
        import pstats

        prof = cProfile.Profile()
        for im in images[-10:]:
            rate(im)
            prof.enable()
            pred.head(who)
            prof.disable()
        images = images[:-10]
        pstats.Stats(prof).sort_stats("cumtime").print_stats(25)
    for k, im in enumerate(images):
        rate(im)
        t = time.perf_counter()
        if k % 2:
            with inference._LOCK:
                pred.head(who)
            head_only.append(time.perf_counter() - t)
        else:
            inference.predict(annotator=who, image_ids=ids)
            after.append(time.perf_counter() - t)
    return after, head_only


def bench_embed(args) -> list[dict]:
    import torch
    from PIL import Image as PILImage

    from rewardmodel.backbones import OpenClipBackbone

    device = "cuda" if args.gpu else "cpu"
    out = []
    for name in ("ViT-B-32", "ViT-L-14"):
        bb = OpenClipBackbone.build(f"open_clip:{name}", device=device)
        batch = 256 if args.gpu else args.cpu_batch
        rng = np.random.default_rng(0)
        imgs = [
            PILImage.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
            for _ in range(batch)
        ]
        bb.embed(imgs[: min(4, batch)])  # warm-up
        if args.gpu:
            torch.cuda.synchronize()
        reps = 3 if args.gpu else (2 if name == "ViT-B-32" else 1)
        t = time.perf_counter()
        for _ in range(reps):
            bb.embed(imgs)
        if args.gpu:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        out.append(
            {
                "model": name,
                "device": device,
                "batch": batch,
                "precision": "bf16 autocast" if args.gpu else "fp32",
                "images_per_s": reps * batch / dt,
                "threads": torch.get_num_threads(),
            }
        )
        del bb
    return out


def main() -> int:
    args = parse_args()
    data_dir = tempfile.mkdtemp(prefix="palate-speed-")
    print(f"# train_speed on {os.cpu_count()} CPU(s)")
    if args.only != "embed":
        connection, old_name = setup_django(data_dir, "speed")
        try:
            r = bench_train(args)
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)
        print(
            f"training: {r['ratings']} ratings, {r['images']} images, "
            f"{r['annotators']} annotators, {r['dim']}-d cached embeddings"
        )
        print(f"  {r['fit_log']}")
        print(
            f"  training run (snapshot+select+report+refit+checkpoint): "
            f"{r['train_run_s']:.1f} s wall, {r['train_cpu_s']:.1f} s CPU of this "
            f"process (load average {r['load_average']:.1f})   [target <= 15 s]"
        )
        print(
            f"  peak RSS of the process: {r['peak_rss_mb']:.0f} MB "
            f"(before training {r['peak_rss_mb_before_training']:.0f} MB)"
            f"   [target <= 1536 MB]"
        )
        print(
            "  primary (validation) metric on the synthetic data: "
            f"{r['primary_metric']:.3f}; torch imported: {r['torch_imported']}"
        )
        print(
            f"  predict 1 annotator × {r['images']} images: cold "
            f"{r['predict_cold_ms']:.0f} ms (loads checkpoint, image features), "
            f"warm median {r['predict_warm_median_ms']:.1f} ms, "
            f"p90 {r['predict_warm_p90_ms']:.1f} ms   [target p50 <= 3 ms]; "
            f"similar crowd weight {r['similar_weight']}"
        )
        print(
            "  the first predict after each 60 s crowd rebuild (crowd query, and "
            "the similar crowd's fit ratings where on): median "
            f"{r['predict_after_crowd_rebuild_ms']:.0f} ms"
        )
        print(
            "  predict for an annotator the version never saw (one query for "
            "their ratings; re-adapted only when they changed): median "
            f"{r['predict_adapted_median_ms']:.1f} ms"
        )
        up, only = r["newcomer_predict_after_rating_ms"], r["newcomer_update_ms"]
        print(
            "  a newcomer (40-80 ratings) rates one more image, then: predict "
            f"median {up['p50']:.1f} ms, p90 {up['p90']:.1f} ms (n={up['n']}); "
            f"the update alone (stamp, ratings, re-adaptation) median "
            f"{only['p50']:.1f} ms, p90 {only['p90']:.1f} ms (n={only['n']})"
            "   [target update <= 5 ms]"
        )
        print(f"  (setup of the synthetic data: {r['setup_s']:.0f} s)")
    if args.only != "train":
        os.environ.setdefault("PALATE_DATA_DIR", data_dir)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
        import django

        django.setup()
        for e in bench_embed(args):
            print(
                f"embedding {e['model']} random weights on {e['device']} "
                f"(batch {e['batch']}, {e['precision']}, {e['threads']} threads): "
                f"{e['images_per_s']:.1f} images/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
