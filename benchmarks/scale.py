"""How each cost grows with the study: 1,000, 10,000 and 100,000 images x 15 raters.

For each size (images, annotators): S = 1,000 / 300, M = 10,000 / 3,000,
L = 100,000 / 10,000, a database of its own is migrated and the study's rows are
written in bulk by PostgreSQL (``benchmarks/scale_fill.py``: every constraint and
foreign key in place), then, at each fill (0%, 50%, 90% of the slots, with two
annotators far ahead of the others):

* the standard load run (``assignment_load``'s gunicorn and client: 16 clients
  claiming and rating for ``--load-seconds``): claim and submit p95 server-side,
  CPU per rating; then a probe of the claim for a far-ahead annotator and for an
  ordinary one (30 claims + ratings each, one client, server-side times);
* the integrity check (``integrity_check``, the whole database, as the beat task);
* the dashboard pages (``benchmarks/dashboard.py``'s pages, p95 of ``--repeat``),
  after the study and quality pages without kept figures and their refresh as
  the Celery task runs it (``measure_figures``);
* Krippendorff's alpha of the study (``study_alpha``);
* the dataset export (Parquet, images referenced by id and sha256, not embedded)
  in a child process: wall time and peak RSS.

Then training and predict on ``--train`` ratings (70,000, 300,000, 1,000,000 by
default with L; 14 raters per image, cached synthetic 768-d embeddings), each in a
child process (peak RSS of the whole process).

    .venv/bin/python benchmarks/scale.py --sizes S M              # minutes
    .venv/bin/python benchmarks/scale.py --sizes L --train 1000000 # the big one
    .venv/bin/python benchmarks/scale.py --sizes L --fills 90 --fill-only --keep-db \
        --db-name palate_scale_l                                   # the data alone
    .venv/bin/python benchmarks/scale.py --sizes L --reuse --db-name palate_scale_l
    .venv/bin/python benchmarks/scale.py --tiny                    # seconds (suite)
    .venv/bin/python benchmarks/scale.py --sizes S M L --claim-only # the claim alone

``--claim-only``: per fill only the load run and the probes (the claim and the
submit; no integrity check, alpha, dashboard or export).

Results are appended as JSON lines to ``--out`` (one line per measurement) and
``--plot`` draws every cost against the number of ratings from that file into an
SVG (no matplotlib needed). Not part of the test suite except ``--tiny``; it
creates and drops ``--db-name`` on ``--pg-url``'s server (127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import assignment_load as load  # noqa: E402
import scale_fill  # noqa: E402

SIZES = {"S": (1_000, 300), "M": (10_000, 3_000), "L": (100_000, 10_000)}
TINY = {"T": (200, 40)}
TARGETS = {
    "claim_p95_ms": 20.0,
    "submit_p95_ms": 20.0,
    "dashboard_p95_ms": 300.0,
    "integrity_s": 10.0,
    "train_s": 120.0,
    "train_rss_mb": 4096.0,
    "predict_p50_ms": 3.0,
    "export_s": 60.0,
    "export_rss_mb": 500.0,
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="*", default=["S", "M"], choices=list(SIZES))
    p.add_argument("--fills", nargs="+", type=int, default=[0, 50, 90])
    p.add_argument("--load-seconds", type=float, default=30)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--repeat", type=int, default=10, help="dashboard renders")
    p.add_argument("--probe", type=int, default=30, help="claims per probe")
    p.add_argument(
        "--train",
        nargs="*",
        type=int,
        default=[],
        help="ratings to train on (e.g. 70000 300000 1000000)",
    )
    p.add_argument("--no-export", action="store_true")
    p.add_argument(
        "--claim-only",
        action="store_true",
        help="per fill only the load run and the probes (no integrity, alpha, "
        "dashboard or export)",
    )
    p.add_argument("--keep-db", action="store_true", help="leave the database")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="measure integrity, alpha, dashboard and export again on the study "
        "a --keep-db run left (no build, no fill, no load run); with --train, "
        "train again on the ratings a --keep-db run left (built if missing)",
    )
    p.add_argument(
        "--fill-only",
        action="store_true",
        help="build and fill the study, measure nothing (with --keep-db, for a "
        "later --reuse run)",
    )
    p.add_argument("--tiny", action="store_true", help="seconds: the suite's size")
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--db-name", default="palate_scale")
    p.add_argument("--data-dir", default="/tmp/palate-scale")
    p.add_argument("--broker", default="redis://127.0.0.1:6379/7")
    p.add_argument("--out", default="", help="JSON lines file to append to")
    p.add_argument("--plot", default="", help="SVG to draw from --out's lines")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--study", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # assignment_load's server and meter read these.
    args.workers, args.threads, args.worker_class = 2, 2, "gthread"
    args.conn_max_age, args.synchronous_commit = "60", ""
    args.worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else ""
    args.seed = 1
    if args.tiny:
        args.sizes, args.fills = ["T"], [0, 50]
        args.load_seconds, args.repeat, args.probe = 3, 2, 5
        args.train = args.train or [3_000]
    return args


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values, q):
    return load.pct(list(values), q) if values else None


def emit(args, record: dict) -> None:
    record = {
        "at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "load": round(os.getloadavg()[0], 1),
        **record,
    }
    line = json.dumps(record, sort_keys=True)
    print("RESULT " + line, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(line + "\n")


# --- the database ---------------------------------------------------------------


def prepare_database(args, recreate: bool = True) -> dict:
    env = load.server_env(args)
    env["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost,testserver"
    # Production settings refuse a broker they cannot reach from other hosts;
    # nothing is queued by the measured paths.
    env["CELERY_BROKER_URL"] = args.broker
    for key in (
        "DJANGO_SETTINGS_MODULE",
        "DJANGO_SECRET_KEY",
        "DJANGO_SECURE_SSL_REDIRECT",
        "DJANGO_ALLOWED_HOSTS",
        "DATABASE_URL",
        "DATABASE_CONN_MAX_AGE",
        "PALATE_DATA_DIR",
        "CELERY_BROKER_URL",
        "LOG_LEVEL",
    ):
        os.environ[key] = env[key]
    if not recreate:
        import django

        django.setup()
        return env
    load.recreate_database(args)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    import django

    django.setup()
    return env


def build(args, images: int, annotators: int):
    from django.db import connection, transaction

    from annotation import services
    from annotation.models import Study

    t0 = time.perf_counter()
    with transaction.atomic():
        study = services.study_create(
            name="Scale",
            slug="scale",
            raters_per_image=scale_fill.TARGET,
            quota_per_annotator=min(images, 1_000_000),
            lease_seconds=600,
            status=Study.Status.OPEN,
        )
        with connection.cursor() as cur:
            scale_fill.build_base(
                cur, study_id=study.pk, images=images, annotators=annotators
            )
    return study, time.perf_counter() - t0


def refill(args, study, images, annotators, fill) -> tuple[scale_fill.Plan, float]:
    from django.db import connection, transaction

    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        scale_fill.reset(cur, study_id=study.pk)
        plan = scale_fill.fill(
            cur, study_id=study.pk, images=images, annotators=annotators, fill=fill
        )
    check_splits(study)
    with connection.cursor() as cur:
        # As autovacuum would leave them; never ANALYZE the engine's tables while
        # empty (docs/benchmark-assignment.md, "Statistics").
        tables = ["annotation_image", "annotation_annotator", "auth_user"]
        tables += ["annotation_participation", "authtoken_token"]
        if plan.ratings:
            tables += ["annotation_assignment", "annotation_rating"]
            tables += ["annotation_annotatorquality"]
        for table in tables:
            cur.execute(f"VACUUM ANALYZE {table}")
    return plan, time.perf_counter() - t0


def check_splits(study) -> None:
    """The bulk splits are the engine's: compare a sample with ``split_assign``."""
    from annotation.models import Rating
    from annotation.splits import split_assign

    sample = Rating.objects.filter(study=study).select_related("image", "annotator")
    for r in sample.order_by("?")[:200]:
        want = split_assign(
            image_key=r.image.sha256, annotator_key=r.annotator.split_key
        )
        if r.split != want:
            raise SystemExit(f"bulk split {r.split} != split_assign {want} ({r.pk})")


# --- the measurements -------------------------------------------------------------


def tokens_in_order() -> list[str]:
    """API tokens by annotator number: the first two are the far-ahead ones."""
    from annotation.models import Annotator

    return list(
        Annotator.objects.filter(user__username__startswith="scale")
        .order_by("pk")
        .values_list("user__auth_token__key", flat=True)
    )


def measure_load(args, env, study, tokens) -> dict:
    from django.db import connections

    connections.close_all()
    run_dir = Path(args.data_dir) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "access.log"
    log.unlink(missing_ok=True)
    port = load.free_port()
    server = load.start_server(args, env, port, log)
    try:
        load.wait_ready(port, tokens[0], server)
        meter = load.CpuMeter(server, args)
        c0 = time.process_time()
        deadline = time.monotonic() + args.load_seconds
        # Every annotator but the two far-ahead ones (probed below).
        clients, elapsed = load.run_clients(
            args, port, study.pk, tokens[2:], deadline, meter
        )
        client_cpu = time.process_time() - c0
        meter.sample()
        cpu = meter.used()
        times, statuses = load.parse_access_log(log)
        ratings = statuses.get("submit 201", 0)
        probes = {}
        middle = len(tokens) // 2
        for name, token in (("far_ahead", tokens[0]), ("ordinary", tokens[middle])):
            probes[name] = probe(args, port, study.pk, token, log)
    finally:
        load.stop_server(server)
    errors = [e for c in clients for e in c.errors]
    return {
        "ratings_per_s": ratings / elapsed,
        "ratings": ratings,
        "claim_p50_ms": pct(times["claim"], 50),
        "claim_p95_ms": pct(times["claim"], 95),
        "submit_p50_ms": pct(times["submit"], 50),
        "submit_p95_ms": pct(times["submit"], 95),
        "claims_204": statuses.get("claim 204", 0),
        "cpu_ms_per_rating": {
            "web": cpu["web"] / max(ratings, 1) * 1000,
            "postgres": cpu["postgres"] / max(ratings, 1) * 1000,
            "clients": client_cpu / max(ratings, 1) * 1000,
        },
        "errors": len(errors),
        "first_errors": errors[:3],
        "probe": probes,
    }


def probe(args, port, study_id, token, log: Path) -> dict:
    """``--probe`` claims and ratings by one annotator alone, server-side times."""
    import random

    skip = len(log.read_text().splitlines())
    stats = {"lock": __import__("threading").Lock(), "ratings": 0}
    client = load.Client(port, study_id, [token], 0, random.Random(7), stats)
    claim_path = f"/api/v1/studies/{study_id}/assignments/next/"
    answered = []
    for _ in range(args.probe):
        status, data, _ms = client._post(claim_path, token, None)
        answered.append(status)
        if status != 200:
            break
        body = json.dumps({"score": 4}).encode()
        aid = json.loads(data)["id"]
        client._post(f"/api/v1/assignments/{aid}/rating/", token, body)
    if client.conn is not None:
        client.conn.close()
    time.sleep(0.3)  # the access log line is written after the response
    tail = log.read_text().splitlines()[skip:]
    tmp = log.with_name("probe.log")
    tmp.write_text("\n".join(tail) + "\n")
    times, _ = load.parse_access_log(tmp)
    return {
        "claims": len(times["claim"]),
        "statuses": sorted(set(answered)),
        "claim_p50_ms": pct(times["claim"], 50),
        "claim_p95_ms": pct(times["claim"], 95),
        "submit_p95_ms": pct(times["submit"], 95),
    }


def measure_integrity() -> dict:
    from annotation.integrity.services import integrity_check

    t0 = time.perf_counter()
    drift = integrity_check()
    return {"integrity_s": time.perf_counter() - t0, "integrity_ok": drift.ok}


def measure_alpha(study) -> dict:
    from annotation import selectors

    t0 = time.perf_counter()
    out = selectors.study_alpha(study=study)
    return {
        "alpha_s": time.perf_counter() - t0,
        "alpha": out.get("alpha") if isinstance(out, dict) else None,
    }


def measure_dashboard(args, study) -> tuple[dict, dict]:
    """Each page's renders, and the kept figures' (``measure_figures``)."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from annotation.models import Annotator
    from benchmarks import dashboard as dash

    staff, _ = get_user_model().objects.get_or_create(
        username="scale-staff", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(staff)
    someone = Annotator.objects.order_by("pk").values_list("pk", flat=True)[0]
    pages = {
        "home": reverse("dashboard:home"),
        "study": reverse("dashboard:study", args=[study.pk]),
        "annotators": reverse("dashboard:annotators", args=[study.pk])
        + "?sort=accuracy&dir=desc",
        # The sort that reads the most per annotator (running agreement sums).
        "annotators_agreement": reverse("dashboard:annotators", args=[study.pk])
        + "?sort=agreement&dir=desc",
        "annotator": reverse("dashboard:annotator", args=[study.pk, someone]),
        "quality": reverse("dashboard:quality", args=[study.pk]),
        "model": reverse("dashboard:model"),
    }
    figures, out = measure_figures(client, study, pages), {}
    for name, url in pages.items():
        m = dash.measure(client, url, args.repeat)
        keys = ("p50", "p95", "cpu", "kb", "cold", "cold_cpu")
        out[name] = {k: round(m[k], 1) for k in keys}
        out[name]["queries"] = m["queries"]
    return out, figures


def measure_figures(client, study, pages) -> dict:
    """The dashboard's kept figures (dashboard/figures.py): the study and quality
    pages rendered before any are kept (they queue a refresh and say "being
    computed"), then the refresh as the Celery task runs it (off the request),
    from scratch and again with the study unchanged. The pages measured next
    read what it kept."""
    from dashboard.figures import figures_refresh
    from dashboard.models import StudyFigures

    StudyFigures.objects.filter(study=study).delete()
    out = {}
    for name in ("study", "quality"):
        t0 = time.perf_counter()
        body = client.get(pages[name]).content.decode()
        out[f"{name}_unkept_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        assert "being computed" in body, name
    for label in ("computed", "unchanged"):
        t0 = time.perf_counter()
        assert figures_refresh(study_id=study.pk) == label
        out[f"refresh_{label}_s"] = round(time.perf_counter() - t0, 3)
    return out


def measure_export(args, study) -> dict:
    """The export in a child process: its wall time and peak RSS alone."""
    out = Path(args.data_dir) / "export"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "export", "--study", str(study.pk)]
        + ["--data-dir", args.data_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD ")]
    if proc.returncode or not line:
        return {"export_error": (proc.stderr or proc.stdout)[-800:]}
    return json.loads(line[-1][6:])


def child_export(args) -> None:
    import django

    django.setup()
    from annotation.datasets.services.export import ExportOptions, dataset_export
    from annotation.models import Study

    study = Study.objects.get(pk=args.study)
    before = peak_rss_mb()
    t0 = time.perf_counter()
    report = dataset_export(
        study=study,
        out=Path(args.data_dir) / "export",
        options=ExportOptions(fmt="parquet", images="none"),
    )
    wall = time.perf_counter() - t0
    print(
        "CHILD "
        + json.dumps(
            {
                "export_s": wall,
                "export_rss_mb": peak_rss_mb(),
                "export_rss_before_mb": before,
                "export_ratings": report["ratings"],
                "export_bytes": report["bytes"],
            }
        ),
        flush=True,
    )


# --- training -------------------------------------------------------------------


def measure_train(args, n_ratings: int, annotators: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", f"train:{n_ratings}:{annotators}"]
        + ["--data-dir", args.data_dir]
        + (["--reuse"] if args.reuse else []),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD ")]
    if proc.returncode or not line:
        return {"train_error": (proc.stderr or proc.stdout)[-1500:]}
    return json.loads(line[-1][6:])


def child_train(args) -> None:
    import django

    django.setup()
    import scale_train

    _, n, a = args.child.split(":")
    out = scale_train.run(int(n), int(a), reuse=args.reuse)
    print("CHILD " + json.dumps(out), flush=True)


# --- one size ---------------------------------------------------------------------


def remeasure(args, name: str, images: int, annotators: int) -> None:
    """The read-side measurements again on the database a --keep-db run left."""
    from django.db import connections

    prepare_database(args, recreate=False)
    from annotation.models import Rating, Study

    study = Study.objects.get(slug="scale")
    rec = {"size": name, "images": images, "annotators": annotators}
    rec.update(kind="remeasure", ratings_after=Rating.objects.count())
    rec.update(measure_integrity())
    rec.update(measure_alpha(study))
    rec["dashboard"], rec["figures"] = measure_dashboard(args, study)
    if not args.no_export:
        connections.close_all()
        rec.update(measure_export(args, study))
    emit(args, rec)
    connections.close_all()


def run_size(args, name: str, images: int, annotators: int) -> None:
    if args.reuse:
        remeasure(args, name, images, annotators)
        return
    env = prepare_database(args)
    study, built_s = build(args, images, annotators)
    tokens = tokens_in_order()
    base = {"size": name, "images": images, "annotators": annotators}
    emit(args, {**base, "kind": "build", "build_s": built_s})
    for fill in args.fills:
        plan, fill_s = refill(args, study, images, annotators, fill / 100)
        rec = {**base, "kind": "fill", "fill": fill, "ratings_before": plan.ratings}
        rec["fill_s"] = fill_s
        if args.fill_only:
            emit(args, rec)
            continue
        rec.update(measure_load(args, env, study, tokens))
        if args.claim_only:
            emit(args, rec)
            continue
        rec.update(measure_integrity())
        rec.update(measure_alpha(study))
        from annotation.models import Rating

        rec["ratings_after"] = Rating.objects.count()
        rec["dashboard"], rec["figures"] = measure_dashboard(args, study)
        if not args.no_export and rec["ratings_after"]:
            from django.db import connections

            connections.close_all()
            rec.update(measure_export(args, study))
        emit(args, rec)
    from django.db import connections

    connections.close_all()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child == "export":
        child_export(args)
        return 0
    if args.child and args.child.startswith("train:"):
        child_train(args)
        return 0
    if args.plot and not (args.sizes or args.train):
        import scale_plot

        scale_plot.draw(Path(args.out), Path(args.plot))
        return 0
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    sizes = TINY if args.tiny else {k: SIZES[k] for k in args.sizes}
    print(f"uptime: {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    try:
        for name, (images, annotators) in sizes.items():
            if args.child:
                break
            run_size(args, name, images, annotators)
        for n in args.train:
            if not os.environ.get("DJANGO_SETTINGS_MODULE"):
                prepare_database(args, recreate=not args.reuse)
            annotators = 300 if n <= 100_000 else 3_000 if n <= 400_000 else 10_000
            if args.tiny:
                annotators = 40
            rec = {"kind": "train", "train_ratings": n, "annotators": annotators}
            rec.update(measure_train(args, n, annotators))
            emit(args, rec)
    finally:
        if os.environ.get("DJANGO_SETTINGS_MODULE"):
            from django.db import connections

            connections.close_all()
        if not (args.keep_db or args.reuse):
            load.drop_database(args)
    if args.plot and args.out:
        import scale_plot

        scale_plot.draw(Path(args.out), Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
