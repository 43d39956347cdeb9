"""Generation throughput: the procedural backend alone, and the whole pipeline.

1. ``render()`` in this process: images/s at 256×256 (PNG bytes included).
2. The pipeline with real processes: jobs created here → Redis → 2 Celery worker
   processes (``celery -A config worker -c 1`` twice) → ``item_run`` →
   ``image_create`` (file + Image row + open slots) in PostgreSQL. Timed from the
   first enqueue to the last item finished; then every invariant is checked
   (one image per item, open slots = raters per image, job counts).

    .venv/bin/python benchmarks/generation.py                    # 600 images
    .venv/bin/python benchmarks/generation.py --images 120       # quick

Not part of the test suite. Creates and drops the database ``--db-name`` (default
``palate_genbench``) and flushes Redis db ``--redis-db`` (default 4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.processes import celery_worker_start, process_stop  # noqa: E402


def bench_render(n: int, size: int) -> float:
    from generation.backends.procedural import render

    render(prompt="warm-up", seed=0, width=size, height=size)
    started = time.perf_counter()
    for i in range(n):
        render(
            prompt=f"a benchmark prompt number {i % 10}",
            seed=i,
            width=size,
            height=size,
        )
    return n / (time.perf_counter() - started)


def _psql(pg_url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(pg_url.rsplit("/", 1)[0] + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def bench_pipeline(args) -> dict:
    db_url = f"{args.pg_url.rsplit('/', 1)[0]}/{args.db_name}"
    broker = f"redis://127.0.0.1:6379/{args.redis_db}"
    data_dir = Path(tempfile.mkdtemp(prefix="palate-genbench-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench",
        "DATABASE_URL": db_url,
        "CELERY_BROKER_URL": broker,
        "PALATE_DATA_DIR": str(data_dir),
        "DJANGO_MEDIA_ROOT": str(data_dir / "media"),
        "LOG_LEVEL": "WARNING",
    }
    _psql(args.pg_url, f"DROP DATABASE IF EXISTS {args.db_name}")
    _psql(args.pg_url, f"CREATE DATABASE {args.db_name}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True
    )
    os.environ.update(env)
    import django

    django.setup()
    import redis

    from annotation.models import Image
    from annotation.services import study_create
    from generation import services
    from generation.models import GenerationItem, GenerationJob

    redis.Redis.from_url(broker).flushdb()
    study = study_create(name="bench", slug="genbench", raters_per_image=15)
    n_prompts = max(1, args.images // args.per_prompt)
    prompts = [
        services.prompt_create(
            study=study,
            text=f"benchmark prompt {i}: a warm ornate city at dusk",
            domain="art",
        )
        for i in range(n_prompts)
    ]
    workers = [
        celery_worker_start(env=env, name=f"bench{i}@%h", loglevel="warning")
        for i in range(args.workers)
    ]
    try:
        time.sleep(args.warmup)  # let the workers import Django and connect
        started = time.perf_counter()
        jobs = services.jobs_create(
            prompts=prompts,
            backend="procedural",
            n_seeds=args.per_prompt,
            params={"width": args.size, "height": args.size},
        )
        total = sum(j.n_seeds for j in jobs)
        ids = [j.pk for j in jobs]
        while GenerationItem.objects.filter(
            job_id__in=ids, status__in=["queued", "running"]
        ).exists():
            time.sleep(0.05)
            if time.perf_counter() - started > args.max_seconds:
                raise SystemExit("timed out waiting for the workers")
        elapsed = time.perf_counter() - started
    finally:
        for w in workers:
            process_stop(w)
    done = GenerationItem.objects.filter(job_id__in=ids, status="done").count()
    images = Image.objects.filter(study=study)
    ok = (
        done == total
        and images.count() == total
        and images.filter(open_slots=15).count() == total
        and GenerationItem.objects.filter(job_id__in=ids, image__isnull=False)
        .values("image")
        .distinct()
        .count()
        == total
        and all(
            j.status == "done" and j.n_done == j.n_seeds
            for j in GenerationJob.objects.filter(pk__in=ids)
        )
    )
    from django.db import connections

    connections.close_all()
    _psql(args.pg_url, f"DROP DATABASE IF EXISTS {args.db_name}")
    return {"images": total, "seconds": elapsed, "per_s": total / elapsed, "ok": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--render-n", type=int, default=300)
    parser.add_argument(
        "--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--db-name", default="palate_genbench")
    parser.add_argument("--redis-db", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=6.0)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()

    rate = bench_render(args.render_n, args.size)
    print(
        f"procedural render(): {rate:.1f} images/s at {args.size}x{args.size} "
        f"({args.render_n} images, 1 process)"
    )
    result = bench_pipeline(args)
    print(
        f"pipeline: {result['images']} images in {result['seconds']:.1f} s = "
        f"{result['per_s']:.1f} images/s with {args.workers} worker processes "
        f"(Redis + PostgreSQL, {args.size}x{args.size}); invariants "
        f"{'OK' if result['ok'] else 'VIOLATED'}"
    )
    if not result["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
