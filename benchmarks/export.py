"""Dataset export speed and memory: 5,000 images and 70,000 ratings.

Builds a study in a throw-away test database: 5,000 distinct PNG files made by the
project's procedural renderer (256x256, its default; a pool of renders made
distinct by a text chunk, so every file has its own sha256), 300 annotators with
demographics, 70,000 ratings (14 per image, stored splits). Then each export
variant runs in a fresh child process (so the set-up does not count toward its
memory) and reports wall time and peak RSS (the whole process: Python, Django,
pyarrow), next to the RSS before the export started.

Usage::

    .venv/bin/python benchmarks/export.py
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/palate_bench \\
        .venv/bin/python benchmarks/export.py --variants parquet-embed csv-path
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = {
    "parquet-embed": ("parquet", "embed"),
    "parquet-none": ("parquet", "none"),
    "csv-path": ("csv", "path"),
    "csv-none": ("csv", "none"),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--ratings-per-image", type=int, default=14)
    p.add_argument("--annotators", type=int, default=300)
    p.add_argument("--pool", type=int, default=64, help="distinct renders")
    p.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS)
    )
    p.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--db-name", help=argparse.SUPPRESS)
    return p.parse_args()


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def with_text_chunk(png: bytes, text: str) -> bytes:
    """The same PNG with a tEXt chunk after IHDR: same pixels, distinct bytes."""
    data = b"palate\x00" + text.encode()
    chunk = (
        struct.pack(">I", len(data))
        + b"tEXt"
        + data
        + struct.pack(">I", zlib.crc32(b"tEXt" + data) & 0xFFFFFFFF)
    )
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def build(args) -> int:
    import numpy as np
    from django.conf import settings

    from annotation import services
    from annotation.models import Image, Rating, Study
    from annotation.splits import split_assign
    from generation.backends.procedural import render

    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    study = services.study_create(
        name="Export benchmark",
        slug="export-bench",
        status=Study.Status.OPEN,
        raters_per_image=15,
        quota_per_annotator=10**6,
        demographics_fields=["age_range", "country"],
    )
    annotators = []
    for i in range(args.annotators):
        a = services.annotator_create(source="prolific", external_id=f"PID{i:06d}")
        services.participation_consent(
            annotator=a,
            study=study,
            demographics={
                "age_range": ["18-29", "30-44", "45+"][i % 3],
                "country": "DE",
            },
        )
        annotators.append(a)
    pool = [render(prompt=f"benchmark image {k}", seed=k)[0] for k in range(args.pool)]
    media = Path(settings.MEDIA_ROOT)
    rows, total_bytes = [], 0
    for i in range(args.images):
        data = with_text_chunk(pool[i % len(pool)], f"image {i}")
        sha = hashlib.sha256(data).hexdigest()
        name = f"images/{study.pk}/{sha[:2]}/{sha}.png"
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        (media / name).write_bytes(data)
        total_bytes += len(data)
        rows.append(
            Image(
                study=study,
                file=name,
                sha256=sha,
                width=256,
                height=256,
                format="PNG",
                prompt=f"benchmark image {i % len(pool)}",
                domain=["art", "photo"][i % 2],
                provenance={
                    "backend": "procedural",
                    "model": "procedural-v1",
                    "seed": i,
                },
                target_ratings=15,
            )
        )
    images = Image.objects.bulk_create(rows, batch_size=1000)
    ratings = []
    for image in images:
        for j in rng.choice(len(annotators), args.ratings_per_image, replace=False):
            a = annotators[int(j)]
            ratings.append(
                Rating(
                    study=study,
                    image=image,
                    annotator=a,
                    score=int(rng.integers(1, 8)),
                    time_on_item_ms=int(rng.integers(800, 9000)),
                    split=split_assign(
                        image_key=image.sha256, annotator_key=a.split_key
                    ),
                )
            )
    Rating.objects.bulk_create(ratings, batch_size=5000)
    Image.objects.filter(study=study).update(rating_count=args.ratings_per_image)
    print(
        f"set-up: {len(images)} images ({total_bytes / 2**20:.0f} MiB of PNG), "
        f"{len(ratings)} ratings, {len(annotators)} annotators in "
        f"{time.monotonic() - t0:.0f} s",
        flush=True,
    )
    return study.pk


def child(args) -> None:
    """One export in a fresh process, on the database the parent built."""
    os.environ["PALATE_DATA_DIR"] = args.data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    settings.MEDIA_ROOT = Path(args.data_dir) / "media"
    connection.settings_dict["NAME"] = args.db_name
    from annotation.datasets.services.export import ExportOptions, dataset_export
    from annotation.models import Study

    study = Study.objects.get(slug="export-bench")
    fmt, images = VARIANTS[args.child]
    out = Path(args.data_dir) / f"out-{args.child}"
    before = rss_mb()
    t0 = time.perf_counter()
    report = dataset_export(
        study=study, out=out, options=ExportOptions(fmt=fmt, images=images)
    )
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "variant": args.child,
                "wall_s": round(wall, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "rss_before_mb": round(before, 1),
                "ratings": report["ratings"],
                "images": report["images"],
                "annotators": report["annotators"],
                "files": len(report["files"]),
                "bytes_mib": round(report["bytes"] / 2**20, 1),
                "splits": report["splits"],
                "alpha": report["alpha_interval"],
            }
        )
    )


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    from _common import setup_django

    data_dir = tempfile.mkdtemp(prefix="palate-export-bench-")
    connection, old_name = setup_django(data_dir, "exportbench")
    cpu = platform.processor() or platform.machine()
    print(
        f"machine: {platform.node()} {os.cpu_count()} CPUs, {cpu}; "
        f"database: {connection.vendor}; load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    try:
        build(args)
        db_name = connection.settings_dict["NAME"]
        connection.close()
        for variant in args.variants:
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    variant,
                    "--data-dir",
                    data_dir,
                    "--db-name",
                    db_name,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode:
                print(result.stdout, result.stderr, file=sys.stderr)
                raise SystemExit(f"{variant} failed")
            print(result.stdout.strip().splitlines()[-1], flush=True)
        print(
            "load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()),
            flush=True,
        )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
