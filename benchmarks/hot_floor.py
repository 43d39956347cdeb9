"""The floor under the hot path: the load benchmark's protocol with no work behind it.

Runs ``assignment_load.py``'s very client (16 keep-alive connections, one claim
``POST`` and one rating ``POST`` per rating, token header, JSON body) against
gunicorn in the benchmark's shape (gthread 2 x 2, the same access log line) serving
a WSGI function that answers every claim with a fixed lease and every rating with
201, with no Django and no database. Its ratings/s is what any server of this shape
can reach on this machine with this client: the ceiling for the Label Studio ratio
(``labelstudio_peer.py``) and for ``assignment_load.py``'s ratings/s.

With ``--pg`` it also measures PostgreSQL's floor: ``pgbench`` with 16 clients,
each transaction one durable single-row ``INSERT`` (simple protocol, like
psycopg2), two per rating as the hot path has (a claim and a rating), in a
scratch database ``palate_floor`` that it creates and drops.

    .venv/bin/python benchmarks/hot_floor.py --seconds 40 [--pg] [--server uwsgi]

``--server`` (gunicorn, granian, uwsgi) puts another server in the same shape in
front of the same function (``assignment_load.server_command``). ``--chain``:
the client of ``assignment_load.py --chain`` (one ``?next=1`` rating per rating,
answered with the rating and the next lease) and, with ``--pg``, one transaction
per rating.

Prints ratings/s and CPU per rating of gunicorn, of the clients and (``--pg``) of
the PostgreSQL backends.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import assignment_load as load  # noqa: E402 (the sibling script, not a package)

_LEASE = json.dumps(
    {
        "id": 1,
        "study": 1,
        "image": 1,
        "image_url": "http://127.0.0.1/media/images/x.png",
        "image_width": 64,
        "image_height": 64,
        "status": "leased",
        "leased_at": "2026-11-27T00:00:00Z",
        "expires_at": "2026-11-27T00:10:00Z",
    }
).encode()
_RATING = b'{"id":1,"score":4}'
# Rate and take the next (``?next=1``, assignment_load.py --chain): the rating
# with the next lease, as Palate answers it.
_RATING_NEXT = b'{"id":1,"score":4,"next":' + _LEASE + b"}"


def application(environ, start_response):
    """Answer like the two hot endpoints, doing nothing."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    claim = environ["PATH_INFO"].endswith("/next/")
    chained = "next=1" in environ.get("QUERY_STRING", "")
    body = _LEASE if claim else _RATING_NEXT if chained else _RATING
    start_response(
        "200 OK" if claim else "201 Created",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--server", default="gunicorn", choices=load.SERVERS)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pg", action="store_true", help="also PostgreSQL's floor")
    p.add_argument(
        "--chain",
        action="store_true",
        help="the client rates with ?next=1, one request per rating "
        "(assignment_load.py --chain); with --pg, one transaction per rating",
    )
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    args = p.parse_args(argv)
    status = http_floor(args)
    if args.pg:
        pg_floor(args)
    return status


def http_floor(args: argparse.Namespace) -> int:
    r = http_floor_round(args)
    shape = "one rate+next request" if args.chain else "a claim and a rating"
    print(
        f"{args.server} {args.workers} x {args.threads}, {args.clients} clients, "
        f"{shape} per rating, no application work: {r['ratings']} ratings in "
        f"{r['seconds']:.1f}s = {r['rate']:.0f}/s"
    )
    print(
        f"CPU per rating: {args.server} {r['web_ms']:.2f} ms, clients "
        f"{r['client_ms']:.2f} ms; load avg after {r['load'][1]:.1f}"
    )
    if r["errors"]:
        print(f"{len(r['errors'])} errors, first: {r['errors'][0]}")
        return 1
    return 0


def http_floor_round(args: argparse.Namespace) -> dict:
    """One floor round: start ``args.server`` on the do-nothing app, run the
    clients for ``args.seconds``, stop it. Returns ratings, rate, CPU per rating
    (``web_ms``, ``client_ms``), load before/after and the clients' errors."""
    port = load.free_port()
    logdir = Path(tempfile.mkdtemp(prefix="palate-floor-"))
    log = logdir / "access.log"
    cmd = load.server_command(
        args.server,
        "hot_floor:application",
        port,
        log,
        workers=args.workers,
        threads=args.threads,
    )
    # Every server imports the floor's module from this folder.
    server = subprocess.Popen(
        cmd, cwd=Path(__file__).resolve().parent, start_new_session=True
    )
    load.wait_ready(port, "x", server, path="/ready/next/", name=args.server)
    tokens = [f"{i:040x}" for i in range(args.tokens)]
    stats = {"lock": threading.Lock(), "ratings": 0}
    load_before = os.getloadavg()[0]
    deadline = time.monotonic() + args.seconds
    cpu0 = _tree_cpu(server.pid)
    self0 = time.process_time()
    clients = [
        load.Client(
            port,
            1,
            tokens[i :: args.clients],
            deadline,
            random.Random(i),
            stats,
            chain=getattr(args, "chain", False),
        )
        for i in range(args.clients)
    ]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    elapsed = time.monotonic() - t0
    web = _tree_cpu(server.pid) - cpu0
    own = time.process_time() - self0
    load.stop_server(server)
    n = stats["ratings"]
    return {
        "ratings": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "web_ms": 1000 * web / max(n, 1),
        "client_ms": 1000 * own / max(n, 1),
        "load": (load_before, os.getloadavg()[0]),
        "errors": [e for c in clients for e in c.errors],
    }


def pg_floor(args: argparse.Namespace) -> None:
    import psycopg2

    db = "palate_floor"
    admin = psycopg2.connect(f"{args.pg_url.rstrip('/')}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {db}")
    url = f"{args.pg_url.rstrip('/')}/{db}"
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE floor_rows (id bigserial PRIMARY KEY, n int NOT NULL)"
        )
    conn.close()
    script = Path(tempfile.mkdtemp(prefix="palate-floor-")) / "insert.sql"
    script.write_text("INSERT INTO floor_rows (n) VALUES (1);\n")
    bench = subprocess.Popen(
        ["pgbench", "-n", "-M", "simple", "-c", str(args.clients), "-j", "2"]
        + ["-T", str(int(args.seconds)), "-f", str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Backends exit with pgbench: measure their CPU over a window inside the run.
    time.sleep(2)
    with admin.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [db])
        pids = [pid for (pid,) in cur.fetchall()]
    cpu0, t0 = sum(load.cpu_seconds(pid) for pid in pids), time.monotonic()
    time.sleep(max(1.0, args.seconds - 4))
    cpu1, t1 = sum(load.cpu_seconds(pid) for pid in pids), time.monotonic()
    out, _ = bench.communicate()
    tps = next(
        float(line.split("=")[1].split()[0])
        for line in out.splitlines()
        if line.startswith("tps =")
    )
    ms = 1000 * (cpu1 - cpu0) / (tps * (t1 - t0))
    per = 1 if getattr(args, "chain", False) else 2  # transactions per rating
    print(
        f"PostgreSQL, {args.clients} clients, one durable single-row INSERT per "
        f"transaction: {tps:.0f} transactions/s = {tps / per:.0f} ratings/s at "
        f"{per} per rating; backend CPU {per * ms:.2f} ms per rating"
    )
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    admin.close()


def _tree_cpu(pid: int) -> float:
    """CPU of the server so far: the master's own, the workers it has reaped
    (its cutime and cstime: a worker recycled during the round, as uWSGI's
    ``max-requests`` does, still counts) and those alive now."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(load.cpu_seconds(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(x) for x in out.stdout.split()]


if __name__ == "__main__":
    raise SystemExit(main())
