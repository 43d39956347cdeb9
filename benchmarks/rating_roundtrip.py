"""Server time of the htmx rating round-trip, and the rating page's weight.

One round-trip is what a key press costs the server: POST the score for the
current assignment with ``HX-Request`` and get back the ``rater`` fragment with
the next image (submit + claim + render). Timed in-process through Django's test
client, so it includes middleware, session, auth, every query and the template,
but not the network or the WSGI server.

Runs against a throwaway database created next to DATABASE_URL's (PostgreSQL):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/palate_bench \\
        .venv/bin/python benchmarks/rating_roundtrip.py [--annotators 3] [--per 100]

Prints p50/p95/max in milliseconds, the queries per round trip (and whether any
wrote the session), optionally a profile (``--profile N``), and the page size
(HTML + CSS + JS, raw and gzip-compressed as served by WhiteNoise), excluding the
image.
"""

import argparse
import cProfile
import gzip
import os
import pstats
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
os.environ.setdefault("PALATE_DATA_DIR", tempfile.mkdtemp(prefix="palate-bench-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=3)
    parser.add_argument("--per", type=int, default=100, help="round-trips each")
    parser.add_argument("--warmup", type=int, default=10, help="per annotator")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also print cProfile's N costliest functions (cumulative) over the "
        "measured round trips (the timings are then inflated by the profiler)",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    from annotation import services
    from tests.factories import StudyFactory, png_bytes

    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL server (the figures are for it).")
    setup_test_environment()
    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="palate-bench-media-")
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        per = args.per + args.warmup
        study = StudyFactory(
            slug="bench",
            raters_per_image=3,
            quota_per_annotator=per + 5,
            completion_code="BENCH",
        )
        n_images = per + 50
        for i in range(n_images):
            services.image_create(
                study=study, data=png_bytes(50_000 + i, (64, 64)), filename=f"{i}.png"
            )

        clients = []
        for _ in range(args.annotators):
            c = Client()
            r = c.post(
                reverse("annotation:join", args=[study.slug]),
                {"t": study.invite_token, "agree": "on"},
            )
            assert r.status_code == 302, r.status_code
            c.post(reverse("annotation:start", args=[study.slug]))
            page = c.get(reverse("annotation:rate", args=[study.slug]))
            assert page.status_code == 200
            clients.append([c, _assignment(page.content)])
        page_html = page.content

        timings, cpu, queries, session_writes = [], [], [], 0
        statements = []

        def count(execute, sql, params, many, context):
            statements.append(sql)
            return execute(sql, params, many, context)

        profiler = cProfile.Profile() if args.profile else None
        for step in range(per):
            for entry in clients:
                c, assignment = entry
                url = reverse("annotation:item_rate", args=[study.slug, assignment])
                measured = step >= args.warmup
                statements.clear()
                if profiler and measured:
                    profiler.enable()
                t0, c0 = time.perf_counter(), time.process_time()
                with connection.execute_wrapper(count):
                    r = c.post(
                        url, {"score": str(1 + step % 7)}, HTTP_HX_REQUEST="true"
                    )
                elapsed = time.perf_counter() - t0
                cpu_ms = (time.process_time() - c0) * 1000
                if profiler and measured:
                    profiler.disable()
                assert r.status_code == 200, (r.status_code, r.content[:300])
                entry[1] = _assignment(r.content)
                if measured:
                    timings.append(elapsed * 1000)
                    cpu.append(cpu_ms)
                    queries.append(len(statements))
                    session_writes += any(
                        "django_session" in q and not q.lstrip().startswith("SELECT")
                        for q in statements
                    )

        timings.sort()
        p50 = statistics.median(timings)
        p95 = timings[int(0.95 * (len(timings) - 1))]
        print(
            f"htmx rating round-trip (submit + next fragment), "
            f"{len(timings)} round-trips, {args.annotators} annotators, "
            f"{n_images} images, PostgreSQL:"
        )
        print(f"  p50 {p50:.1f} ms   p95 {p95:.1f} ms   max {timings[-1]:.1f} ms")
        cpu.sort()
        print(
            f"  of which Django process CPU: p50 {statistics.median(cpu):.1f} ms, "
            f"p95 {cpu[int(0.95 * (len(cpu) - 1))]:.1f} ms (the rest: PostgreSQL, "
            f"waiting for a CPU)"
        )
        print(
            f"  queries per round trip: min {min(queries)}, max {max(queries)}; "
            f"round trips that wrote the session: {session_writes}"
        )
        print(f"  the statements of the last one: {statements}")
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"  load average during the run: {load}")

        _print_page_weight(page_html)
        if profiler:
            print(f"cProfile over the {len(timings)} measured round trips:")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _print_page_weight(page_html: bytes) -> None:
    from django.conf import settings
    from django.contrib.staticfiles import finders

    assets = re.findall(rb'(?:src|href)="(/static/[^"]+)"', page_html)
    total_raw = len(page_html)
    total_gz = len(gzip.compress(page_html, 6))
    rows = [("rating page HTML", len(page_html), total_gz)]
    for asset in assets:
        rel = asset.decode().removeprefix(settings.STATIC_URL)
        data = Path(finders.find(rel)).read_bytes()
        gz = len(gzip.compress(data, 6))
        rows.append((rel, len(data), gz))
        total_raw += len(data)
        total_gz += gz
    print("rating page weight excluding the image (bytes, raw / gzip):")
    for name, raw, gz in rows:
        print(f"  {name:<24} {raw:>7} / {gz:>6}")
    print(f"  {'total':<24} {total_raw:>7} / {total_gz:>6}")


def _assignment(html: bytes) -> str:
    """The opaque token of the item on screen."""
    match = re.search(rb'data-assignment="([\w-]{22})"', html)
    if match is None:
        raise SystemExit(f"no assignment in response: {html[:300]!r}")
    return match.group(1).decode()


if __name__ == "__main__":
    main()
