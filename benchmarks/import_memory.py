"""Peak memory and time of ``import_dataset`` (a Palate export back into a study).

Builds a study of ``--images`` distinct PNG files (the procedural renderer's
256x256 renders made distinct by a text chunk, as ``benchmarks/export.py``) and
``--ratings-per-image`` ratings each by ``--annotators`` annotators, exports it
(Parquet, images embedded: the largest tables an import reads), then imports the
export into a new study in a fresh child process and prints its wall time and
peak RSS, with the RSS at each stage the importer reports.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/palate_bench \\
        .venv/bin/python benchmarks/import_memory.py           # 5,000 / 70,000
    .venv/bin/python benchmarks/import_memory.py --tiny         # seconds (suite)

Target: peak RSS <= 500 MB at 70,000 ratings and 5,000 images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGET_MB = 500


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--ratings-per-image", type=int, default=14)
    p.add_argument("--annotators", type=int, default=300)
    p.add_argument("--pool", type=int, default=64, help="distinct renders")
    p.add_argument("--format", default="parquet", choices=["parquet", "jsonl"])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--db-name", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.images, args.annotators, args.pool = 60, 20, 8
    return args


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(args) -> int:
    import numpy as np
    from django.conf import settings
    from export import with_text_chunk

    from annotation import services
    from annotation.models import Image, Participation, Rating, Study
    from annotation.splits import split_assign
    from generation.backends.procedural import render

    rng = np.random.default_rng(0)
    study = services.study_create(
        name="Import benchmark",
        slug="import-bench-src",
        status=Study.Status.OPEN,
        raters_per_image=15,
        quota_per_annotator=10**6,
        demographics_fields=["age_range", "country"],
    )
    annotators = []
    for i in range(args.annotators):
        a = services.annotator_create(
            source="prolific",
            external_id=f"PID{i:06d}",
            demographics={"age_range": ["18-29", "30-44", "45+"][i % 3]},
        )
        annotators.append(a)
    Participation.objects.bulk_create(
        [Participation(annotator=a, study=study) for a in annotators]
    )
    pool = [render(prompt=f"benchmark image {k}", seed=k)[0] for k in range(args.pool)]
    media = Path(settings.MEDIA_ROOT)
    rows = []
    for i in range(args.images):
        data = with_text_chunk(pool[i % len(pool)], f"image {i}")
        sha = hashlib.sha256(data).hexdigest()
        name = f"images/{study.pk}/{sha[:2]}/{sha}.png"
        (media / name).parent.mkdir(parents=True, exist_ok=True)
        (media / name).write_bytes(data)
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
                provenance={"backend": "procedural", "seed": i},
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
    return study.pk


def export(args, study_id: int, out: Path) -> None:
    from annotation.datasets.services.export import ExportOptions, dataset_export
    from annotation.models import Study

    images = "embed" if args.format == "parquet" else "path"
    dataset_export(
        study=Study.objects.get(pk=study_id),
        out=out,
        options=ExportOptions(fmt=args.format, images=images),
    )


def child(args) -> None:
    """The import alone, in a fresh process: wall time, peak RSS, RSS by stage."""
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    settings.MEDIA_ROOT = Path(os.environ["PALATE_DATA_DIR"]) / "media"
    connection.settings_dict["NAME"] = args.db_name
    from annotation import services
    from annotation.datasets.services.import_export_file import dataset_import
    from annotation.models import Study

    study = services.study_create(
        name="Imported",
        slug="import-bench-dst",
        status=Study.Status.OPEN,
        raters_per_image=15,
        demographics_fields=["age_range", "country"],
    )
    stages: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        stages[stage] = max(stages.get(stage, 0.0), rss_mb())

    before = rss_mb()
    t0 = time.perf_counter()
    report = dataset_import(study=study, root=Path(args.child), on_progress=progress)
    wall = time.perf_counter() - t0
    assert Study.objects.get(pk=study.pk).images.count() == report["images"]
    print(
        "CHILD "
        + json.dumps(
            {
                "wall_s": round(wall, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "rss_before_mb": round(before, 1),
                "rss_by_stage_mb": {k: round(v, 1) for k, v in stages.items()},
                "images": report["images"],
                "ratings": report["ratings"],
            }
        ),
        flush=True,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    from _common import setup_django

    data_dir = tempfile.mkdtemp(prefix="palate-import-bench-")
    connection, old_name = setup_django(data_dir, "importbench")
    print(f"load average before: {os.getloadavg()}", flush=True)
    result = {}
    try:
        t0 = time.perf_counter()
        study_id = build(args)
        out = Path(data_dir) / "export"
        export(args, study_id, out)
        print(f"set-up and export: {time.perf_counter() - t0:.0f} s", flush=True)
        db_name = connection.settings_dict["NAME"]
        connection.close()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(out), "--db-name", db_name],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PALATE_DATA_DIR": data_dir},
        )
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD ")]
        if proc.returncode or not line:
            print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit("the import failed")
        result = json.loads(line[-1][6:])
        print(json.dumps(result), flush=True)
        print(f"load average after: {os.getloadavg()}", flush=True)
        met = result["peak_rss_mb"] <= TARGET_MB
        print(
            f"peak RSS {result['peak_rss_mb']:.0f} MB <= {TARGET_MB} MB: "
            + ("met" if met else "MISSED")
        )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
