"""CPU per request of the two hot API endpoints inside Django's WSGI application.

``assignment_load.py`` measures the whole system (gunicorn, PostgreSQL, clients);
this isolates what one worker's Python costs per claim and per submit: it calls
``config.wsgi.application`` directly with a WSGI environ (production settings,
every middleware, no HTTP server), one claim and one submit per turn, and prints
CPU per request (``time.thread_time``, which excludes time waiting for PostgreSQL),
wall time, queries per request and, with ``--profile N``, cProfile's N costliest
functions by CPU time. ``--bare`` also times the same requests against the views
alone (no middleware), so the difference is the middleware stack's cost.

Needs PostgreSQL; builds its own database (``--db-name``, dropped at the end):

    .venv/bin/python benchmarks/hot_wsgi.py --requests 1000 [--profile 40]
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import assignment_load  # noqa: E402


def environ(method: str, path: str, token: str, body: bytes) -> dict:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Token {token}",
        "HTTP_ACCEPT": "*/*",
        "CONTENT_TYPE": "application/json" if body else "",
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def call(app, env: dict) -> tuple[str, bytes]:
    status = []
    chunks = app(env, lambda s, h, exc_info=None: status.append(s))
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return status[0], body


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, cpu: list[float], wall: list[float], queries: list[int]) -> str:
    return (
        f"  {name:<7} CPU p50 {statistics.median(cpu):.3f} ms, mean "
        f"{statistics.fmean(cpu):.3f} ms; wall p50 {statistics.median(wall):.3f} / "
        f"p95 {pct(wall, 0.95):.3f} ms; queries {min(queries)}-{max(queries)}"
    )


def run(app, study_id, tokens, n, profiler=None, label="wsgi"):
    from django.db import connection

    counts: list[int] = []

    def count(execute, sql, params, many, context):
        counts[-1] += 1
        return execute(sql, params, many, context)

    stats = {k: ([], [], []) for k in ("claim", "submit")}
    claim_path = f"/api/v1/studies/{study_id}/assignments/next/"

    def one(name: str, path: str, token: str, body: bytes, expect: str) -> bytes:
        env = environ("POST", path, token, body)
        counts.append(0)
        if profiler:
            profiler.enable()
        c0, w0 = time.thread_time(), time.perf_counter()
        status, data = call(app, env)
        c1, w1 = time.thread_time(), time.perf_counter()
        if profiler:
            profiler.disable()
        if not status.startswith(expect):
            raise SystemExit(f"{label} {name}: {status} {data[:200]!r}")
        cpu, wall, queries = stats[name]
        cpu.append((c1 - c0) * 1000)
        wall.append((w1 - w0) * 1000)
        queries.append(counts[-1])
        return data

    with connection.execute_wrapper(count):
        for turn in range(n):
            token = tokens[turn % len(tokens)]
            data = one("claim", claim_path, token, b"", "200")
            assignment = json.loads(data)["id"]
            path = f"/api/v1/assignments/{assignment}/rating/"
            one("submit", path, token, b'{"score": 4}', "201")
    return stats


def bare_app():
    """The URL resolver and the view, no middleware: WSGIHandler with an empty
    middleware chain."""
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler.__new__(WSGIHandler)
    handler._view_middleware = []
    handler._template_response_middleware = []
    handler._exception_middleware = []
    handler._middleware_chain = handler._get_response
    handler.request_class = WSGIHandler.request_class
    return handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="claims (and submits)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--profile", type=int, default=0, metavar="N")
    p.add_argument(
        "--sort", default="cumulative", help="the profile's order (e.g. tottime)"
    )
    p.add_argument("--bare", action="store_true", help="also time without middleware")
    p.add_argument("--db-name", default="palate_hot_wsgi")
    p.add_argument("--data-dir", default="/tmp/palate-hot-wsgi")
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    args = p.parse_args()
    n = args.requests + args.warmup
    load_args = assignment_load.parse_args(
        [
            "--images",
            str(max(200, n // 3 + 50)),
            "--annotators",
            "20",
            "--raters",
            "15",
            "--db-name",
            args.db_name,
            "--data-dir",
            args.data_dir,
            "--pg-url",
            args.pg_url,
        ]
    )
    load_args.quota = n
    env = assignment_load.server_env(load_args)
    os.environ.update(env)
    subprocess.run(["rm", "-rf", str(Path(args.data_dir) / "media")], check=True)
    assignment_load.recreate_database(load_args)
    subprocess.run(
        [str(ROOT / ".venv/bin/python"), "manage.py", "migrate", "--no-input", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    try:
        import django

        django.setup()
        from django.core.wsgi import get_wsgi_application

        study_id, tokens = assignment_load.build_study(load_args)
        app = get_wsgi_application()
        run(app, study_id, tokens, args.warmup)
        print(f"load average {os.getloadavg()[0]:.2f}; {args.requests} turns")
        # CPU time, not wall time: waits for PostgreSQL and for the GIL drop out.
        profiler = cProfile.Profile(time.thread_time) if args.profile else None
        stats = run(app, study_id, tokens, args.requests, profiler)
        print("through config.wsgi.application (every middleware):")
        for name, (cpu, wall, queries) in stats.items():
            print(line(name, cpu, wall, queries))
        if args.bare:
            stats = run(bare_app(), study_id, tokens, args.requests, label="bare")
            print("views alone (no middleware):")
            for name, (cpu, wall, queries) in stats.items():
                print(line(name, cpu, wall, queries))
        print(f"load average {os.getloadavg()[0]:.2f}")
        if profiler:
            pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.profile)
    finally:
        from django.db import connection

        connection.close()
        assignment_load.drop_database(load_args)


if __name__ == "__main__":
    main()
