"""Load test of the assignment engine through a real gunicorn server on PostgreSQL.

Builds a study (default 5,000 images x 15 raters, 300 annotators) in a database of
its own, starts gunicorn on 127.0.0.1, and lets concurrent HTTP clients claim and
rate until every image has its ratings. Prints ratings/s, server-side latency of
claim and submit (from gunicorn's access log, ``%(D)s`` microseconds: the time the
worker spent on the request, not the time it waited in the listen queue) and
client-side latency (which includes queueing), then checks the counts in the
database and exits non-zero if any invariant does not hold.

    .venv/bin/python benchmarks/assignment_load.py            # full run
    .venv/bin/python benchmarks/assignment_load.py --images 300 --annotators 40 \
        --clients 8 --max-seconds 60                          # quick smoke run

Not part of the test suite. It creates and drops the database ``--db-name``
(default ``palate_bench``) on ``--pg-url``'s server; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SERVERS = ("gunicorn", "granian", "uwsgi")
# What each server's access-log time covers.
SERVER_TIME = {
    "gunicorn": "%(D)s: from the parsed request to the written response, in the thread",
    "granian": "dt_ms: from the request read, including any wait for a Python thread",
    "uwsgi": "%(micros): from the parsed request to the written response",
}
CLAIM_RE = re.compile(r"^/api/v1/studies/\d+/assignments/next/$")
# uWSGI's access line has the query string (``?next=1``: rate and take the next).
RATE_RE = re.compile(r"^/api/v1/assignments/[\w-]+/rating/(\?next=1)?$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--annotators", type=int, default=300)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--raters", type=int, default=15, help="ratings per image")
    p.add_argument(
        "--quota",
        type=int,
        default=0,
        help="quota per annotator (default: 1.2 x images*raters/annotators)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=900,
        help="stop the clients after this long even if images are left",
    )
    p.add_argument(
        "--server",
        default="gunicorn",
        choices=SERVERS,
        help="the WSGI server to measure (same app, same client, same shape)",
    )
    p.add_argument("--workers", type=int, default=2, help="server worker processes")
    p.add_argument("--threads", type=int, default=2, help="threads per worker")
    p.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    p.add_argument("--port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--db-name", default="palate_bench")
    p.add_argument("--data-dir", default="/tmp/palate-bench")
    p.add_argument(
        "--conn-max-age",
        default="60",
        help="DATABASE_CONN_MAX_AGE for the server (0: a connection per request)",
    )
    p.add_argument(
        "--synchronous-commit",
        default="",
        help="DATABASE_SYNCHRONOUS_COMMIT for the server (e.g. off; default: the "
        "PostgreSQL server's setting)",
    )
    p.add_argument(
        "--worker-tmp-dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else "",
        help="gunicorn --worker-tmp-dir (its heartbeat file, touched on every loop; "
        "default /dev/shm where it exists, as the README launches it; '' for "
        "gunicorn's default, the system temporary folder)",
    )
    p.add_argument(
        "--policy",
        default="fullest-first",
        choices=["fullest-first", "adaptive"],
        help="the study's dealing policy; adaptive: warm-up 0, --band, and a "
        "ranking of --rank-depth random images per annotator (what the claim "
        "walks; no worker refreshes it here, which changes nothing in its cost)",
    )
    p.add_argument("--band", type=int, default=2)
    p.add_argument(
        "--broker",
        default=os.environ.get("PALATE_BENCH_BROKER", "redis://127.0.0.1:6379/10"),
        help="Celery broker the server is configured with (nothing consumes it)",
    )
    p.add_argument("--rank-depth", type=int, default=200)
    p.add_argument(
        "--chain",
        action="store_true",
        help="one request per rating: each client rates with ?next=1 and takes "
        "the next item from the answer (a claim only for an annotator's first)",
    )
    p.add_argument("--keep-db", action="store_true", help="do not drop the database")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY="benchmark-only-" + "x" * 40,
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"{args.pg_url.rstrip('/')}/{args.db_name}",
        DATABASE_CONN_MAX_AGE=str(args.conn_max_age),
        # Scripts reusing this (soak.py) may not have every flag.
        DATABASE_SYNCHRONOUS_COMMIT=getattr(args, "synchronous_commit", ""),
        PALATE_DATA_DIR=args.data_dir,
        # Production settings refuse a broker other than Redis/AMQP; nothing
        # consumes it here (adaptive studies queue ranking refreshes into it).
        CELERY_BROKER_URL=getattr(args, "broker", "redis://127.0.0.1:6379/10"),
        LOG_LEVEL="WARNING",
    )
    return env


# --- database and fixtures ------------------------------------------------------


def recreate_database(args: argparse.Namespace) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{args.pg_url.rstrip('/')}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{args.db_name}"')
    conn.close()


def drop_database(args: argparse.Namespace) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{args.pg_url.rstrip('/')}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
    conn.close()


def tiny_png(n: int) -> bytes:
    """An 8x8 RGB PNG whose pixels encode ``n``, so every image has its own sha256."""
    raw = bytearray()
    for y in range(8):
        raw.append(0)  # filter type
        for x in range(8):
            v = (n * 2654435761 + y * 8 + x) & 0xFFFFFF
            raw += bytes(((v >> 16) & 255, (v >> 8) & 255, v & 255))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (8).to_bytes(4, "big") * 2 + bytes((8, 2, 0, 0, 0))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )


def build_study(args: argparse.Namespace) -> tuple[int, list[str]]:
    """Study, images and annotators with tokens. Returns (study id, tokens)."""
    from django.conf import settings
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from annotation import services
    from annotation.models import Image, Study, image_upload_to
    from annotation.studies.images import image_inspect

    quota = args.quota or max(
        1, -(-args.images * args.raters * 6 // 5 // args.annotators)
    )
    study = services.study_create(
        name="Assignment load benchmark",
        slug="bench",
        raters_per_image=args.raters,
        quota_per_annotator=quota,
        lease_seconds=600,
        status=Study.Status.OPEN,
    )
    # Bulk insert: the files are real PNGs on the storage path image_create would use
    # and the counters start where image_create starts them (0 ratings, 0 leases,
    # target_ratings from the study); image_inspect is run on the first one only.
    image_inspect(data=tiny_png(0), name="0.png")
    media = Path(settings.MEDIA_ROOT)
    rows = []
    for i in range(args.images):
        data = tiny_png(i)
        sha = hashlib.sha256(data).hexdigest()
        img = Image(
            study=study,
            sha256=sha,
            width=8,
            height=8,
            format="PNG",
            prompt=f"benchmark image {i}",
            target_ratings=study.raters_per_image,
        )
        name = image_upload_to(img, f"{sha}.png")
        path = media / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        img.file.name = name
        rows.append(img)
    with transaction.atomic():
        Image.objects.bulk_create(rows, batch_size=1000)
    tokens = []
    # One transaction per person: consent is a durable service transaction.
    for i in range(args.annotators):
        annotator = services.annotator_create(
            source="import", external_id=f"bench-{i}", username=f"bench{i:04d}"
        )
        services.participation_consent(
            annotator=annotator, study=study, token=study.invite_token
        )
        tokens.append(Token.objects.create(user=annotator.user).key)
    if getattr(args, "policy", "fullest-first") == "adaptive":  # soak.py reuses this
        _rank_randomly(args, study)
    return study.pk, tokens


def _rank_randomly(args: argparse.Namespace, study) -> None:
    """Adaptive dealing with a ranking of ``--rank-depth`` random images per
    annotator (rankings are the model's output; the claim's cost is the walk)."""
    from annotation.engine.services.dealing import dealing_policy_set
    from annotation.models import DealingRank, Participation

    dealing_policy_set(study=study, policy="adaptive", warmup=0, band=args.band)
    rng = random.Random(args.seed)
    ids = list(study.images.values_list("pk", flat=True))
    rows = []
    for annotator_id in Participation.objects.filter(study=study).values_list(
        "annotator_id", flat=True
    ):
        for rank, image_id in enumerate(
            rng.sample(ids, min(args.rank_depth, len(ids)))
        ):
            rows.append(
                DealingRank(
                    study=study,
                    annotator_id=annotator_id,
                    image_id=image_id,
                    rank=rank + 1,
                    information=1.0 / (rank + 1),
                )
            )
    DealingRank.objects.bulk_create(rows, batch_size=5000)


def verify(study_id: int, raters: int) -> list[str]:
    """Every invariant the run must leave behind; returns failures (empty: all hold)."""
    from datetime import timedelta

    from django.db.models import Count, Q
    from django.utils import timezone

    from annotation import services
    from annotation.models import Assignment, Image, Rating

    failures: list[str] = []
    # Sweep as if every lease had run out, so lease_count must drop to 0.
    future = timezone.now() + timedelta(days=1)
    while services.lease_expire(study_id=study_id, now=future, limit=1000):
        pass
    images = Image.objects.filter(study_id=study_id).annotate(
        valid=Count("ratings", filter=Q(ratings__is_valid=True)),
        all_ratings=Count("ratings"),
    )
    n_images = 0
    for img in images.iterator(chunk_size=2000):
        n_images += 1
        if img.valid != raters:
            failures.append(f"image {img.pk}: {img.valid} valid ratings, want {raters}")
        if img.rating_count != img.valid:
            failures.append(
                f"image {img.pk}: rating_count {img.rating_count} != {img.valid} rows"
            )
        if img.lease_count != 0:
            failures.append(
                f"image {img.pk}: lease_count {img.lease_count} after sweep"
            )
        if img.open_slots != 0:
            failures.append(f"image {img.pk}: open_slots {img.open_slots}")
        if len(failures) > 20:
            failures.append("... (stopped listing)")
            return failures
    dup_ratings = (
        Rating.objects.filter(study_id=study_id)
        .values("image_id", "annotator_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    if dup_ratings:
        failures.append(f"{dup_ratings} (image, annotator) pairs rated more than once")
    dup_assign = (
        Assignment.objects.filter(study_id=study_id)
        .values("image_id", "annotator_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    if dup_assign:
        failures.append(f"{dup_assign} (image, annotator) pairs dealt more than once")
    live = Assignment.objects.filter(
        study_id=study_id, status=Assignment.Status.LEASED
    ).count()
    if live:
        failures.append(f"{live} leases still live after the sweep")
    total = Rating.objects.filter(study_id=study_id, is_valid=True).count()
    if total != n_images * raters:
        failures.append(f"{total} valid ratings, want {n_images * raters}")
    return failures


# --- server -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn_command(
    gunicorn: Path,
    app: str,
    port: int,
    access_log: Path,
    *,
    workers: int,
    threads: int,
    worker_class: str = "gthread",
    worker_tmp_dir: str = "",
) -> list[str]:
    """The benchmarks' gunicorn command line, the same for every server measured
    (Palate, Label Studio, the floor): keep-alive, backlog, and an access log line
    whose last field is the worker's time on the request in microseconds."""
    cmd = [
        str(gunicorn),
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--keep-alive",
        "30",
        "--backlog",
        "256",
        "--access-logfile",
        str(access_log),
        # method, path, status, worker time in microseconds
        "--access-logformat",
        "%(m)s %(U)s %(s)s %(D)s",
        "--error-logfile",
        str(access_log.with_name(access_log.stem + "-error.log")),
    ]
    if worker_class == "gthread":
        cmd += ["--threads", str(threads)]
    if worker_tmp_dir:
        cmd += ["--worker-tmp-dir", worker_tmp_dir]
    return cmd


def granian_command(
    granian: Path, app: str, port: int, access_log: Path, *, workers: int, threads: int
) -> list[str]:
    """granian (Rust HTTP, WSGI interface) in the benchmarks' shape: ``workers``
    processes with ``threads`` blocking threads each, keep-alive, backlog 256, and
    an access line whose last field is the request's time in milliseconds, from
    when granian read it (so it includes any wait for a free Python thread)."""
    config = access_log.with_name(access_log.stem + "-logging.json")
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "%(message)s"}},
                "handlers": {
                    "access": {
                        "class": "logging.FileHandler",
                        "filename": str(access_log),
                        "formatter": "plain",
                    },
                    "errors": {
                        "class": "logging.FileHandler",
                        "filename": str(
                            access_log.with_name(access_log.stem + "-error.log")
                        ),
                        "formatter": "plain",
                    },
                },
                "loggers": {
                    "_granian": {"handlers": ["errors"], "level": "INFO"},
                    "granian.access": {
                        "handlers": ["access"],
                        "level": "INFO",
                        "propagate": False,
                    },
                },
            }
        )
    )
    module, _, attr = app.partition(":")
    return [
        str(granian),
        f"{module}:{attr or 'application'}",
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--backlog",
        "256",
        "--no-ws",
        "--log-config",
        str(config),
        "--access-log",
        "--access-log-fmt",
        "%(method)s %(path)s %(status)d %(dt_ms).3fms",
    ]


def uwsgi_command(
    uwsgi: Path, app: str, port: int, access_log: Path, *, workers: int, threads: int
) -> list[str]:
    """uWSGI with the shipped ``config/uwsgi.ini`` (what ``make run`` and the
    README start), resized to the benchmarks' shape: ``workers`` processes with
    ``threads`` threads each, HTTP/1.1 keep-alive on the socket, backlog 256, and
    an access line whose last field is the request's time in microseconds
    (``%(micros)``). ``app`` replaces the ini's module (the floor's function)."""
    module, _, attr = app.partition(":")
    return [
        str(uwsgi),
        "--ini",
        str(ROOT / "config" / "uwsgi.ini"),
        "--http11-socket",
        f"127.0.0.1:{port}",
        "--module",
        f"{module}:{attr or 'application'}",
        "--processes",
        str(workers),
        "--threads",
        str(threads),
        "--listen",
        "256",
        "--logto",
        str(access_log),
        "--logformat",
        "%(method) %(uri) %(status) %(micros)",
    ]


def server_command(
    server: str, app: str, port: int, access_log: Path, *, workers: int, threads: int
) -> list[str]:
    """The command line for ``server`` (one of SERVERS) serving the WSGI ``app``
    (``module`` or ``module:attribute``) in the benchmarks' shape."""
    if server == "granian":
        build = granian_command
    elif server == "uwsgi":
        build = uwsgi_command
    else:
        return gunicorn_command(
            VENV_BIN / "gunicorn",
            app,
            port,
            access_log,
            workers=workers,
            threads=threads,
            worker_tmp_dir="/dev/shm" if os.path.isdir("/dev/shm") else "",
        )
    return build(
        VENV_BIN / server, app, port, access_log, workers=workers, threads=threads
    )


def start_server(args, env, port: int, access_log: Path) -> subprocess.Popen:
    if getattr(args, "server", "gunicorn") == "gunicorn":
        cmd = gunicorn_command(
            VENV_BIN / "gunicorn",
            "config.wsgi",
            port,
            access_log,
            workers=args.workers,
            threads=args.threads,
            worker_class=args.worker_class,
            worker_tmp_dir=getattr(args, "worker_tmp_dir", ""),
        )
    else:
        cmd = server_command(
            args.server,
            "config.wsgi",
            port,
            access_log,
            workers=args.workers,
            threads=args.threads,
        )
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)


def wait_ready(
    port: int,
    token: str,
    proc: subprocess.Popen,
    timeout: float = 60,
    *,
    path: str = "/api/v1/studies/",
    name: str = "gunicorn",
) -> None:
    """Poll ``path`` with the token until it answers 200; exit if the server dies
    or stays silent past ``timeout``. A refused connection means "not up yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        status = None
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path, headers={"Authorization": f"Token {token}"})
            status = conn.getresponse().status
            conn.close()
        except OSError as exc:
            status = exc  # still starting: try again below
        if status == 200:
            return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not answer in time")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """user + system CPU of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by the web server's processes (its master and the workers it
    started: "web") and by the PostgreSQL backends of the
    benchmark database. Sampled every few seconds, because backends come and go
    (DATABASE_CONN_MAX_AGE) and an exited process no longer shows its time."""

    def __init__(self, server: subprocess.Popen, args: argparse.Namespace):
        self.server, self.args = server, args
        self.start: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.sample(first=True)

    def _pids(self) -> list[tuple[str, int]]:
        import psycopg2

        pids = [("web", self.server.pid)]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.server.pid:
                pids.append(("web", int(stat.parent.name)))
        conn = psycopg2.connect(f"{self.args.pg_url.rstrip('/')}/postgres")
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s",
                [self.args.db_name],
            )
            pids += [("postgres", pid) for (pid,) in cur.fetchall()]
        conn.close()
        return pids

    def sample(self, first: bool = False) -> None:
        for key in self._pids():
            t = cpu_seconds(key[1])
            if first:
                self.start[key] = t
            self.last[key] = max(t, self.last.get(key, 0.0))

    def used(self) -> dict[str, float]:
        out = {"web": 0.0, "postgres": 0.0}
        for key, t in self.last.items():
            out[key[0]] += t - self.start.get(key, 0.0)
        return out


# --- clients ------------------------------------------------------------------


# Images still open to the annotator behind a token (open slots, never dealt to
# them, quota not reached). Slots only close during a run (clients never abandon
# a lease), so an image open after a 204 was open when the claim answered.
_OPEN_FOR = """
WITH me AS (SELECT a.id FROM authtoken_token t
            JOIN annotation_annotator a ON a.user_id = t.user_id WHERE t.key = %s),
     room AS (SELECT s.quota_per_annotator - (
                  SELECT count(*) FROM annotation_rating r, me
                  WHERE r.annotator_id = me.id AND r.study_id = s.id) AS n
              FROM annotation_study s WHERE s.id = %s)
SELECT count(*) FROM annotation_image i, me, room
WHERE room.n > 0 AND i.study_id = %s AND i.open_slots > 0
  AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                  WHERE a.image_id = i.id AND a.annotator_id = me.id)
"""


def open_for(token: str, study_id: int) -> int:
    """How many images were open to this token's annotator (checked after a
    claim answered 204: "nothing left" must mean it)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_OPEN_FOR, [token, study_id, study_id])
        return cursor.fetchone()[0]


class Client(threading.Thread):
    """One keep-alive connection that cycles through its annotators, one claim and
    one submit each turn, dropping an annotator when a claim answers 204.

    ``chain``: one request per turn instead, the rating with ``?next=1``, whose
    answer's ``next`` is the item of the annotator's next turn (a claim only
    when they hold none yet); ``next`` null drops them as a 204 does."""

    timeout = 60  # seconds for one request

    def __init__(self, port, study_id, tokens, deadline, rng, stats, *, chain=False):
        super().__init__(daemon=True)
        self.port, self.study_id, self.tokens = port, study_id, list(tokens)
        self.deadline, self.rng, self.stats = deadline, rng, stats
        self.chain = chain
        self.claim_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.statuses: dict[str, int] = defaultdict(int)
        self.errors: list[str] = []
        self.false_empty: list[int] = []  # images open at each wrong 204
        self.conn = None

    def _post(self, path: str, token: str, body: bytes | None):
        return self._request("POST", path, token, body)

    def _request(self, method: str, path: str, token: str, body: bytes | None):
        """(status, body, ms) over the keep-alive connection, reconnecting once
        when the server has closed an idle one."""
        headers = {"Authorization": f"Token {token}", "Connection": "keep-alive"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if method == "POST":
            body = body or b""
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout
                )
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, OSError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            ms = (time.perf_counter() - t0) * 1000
            if resp.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return resp.status, data, ms
        raise AssertionError("unreachable")

    def _claim(self, token: str, active: list[str]) -> str | None:
        """The id of the item a claim deals, or None (the annotator dropped)."""
        path = f"/api/v1/studies/{self.study_id}/assignments/next/"
        status, data, ms = self._post(path, token, None)
        self.claim_ms.append(ms)
        self.statuses[f"claim {status}"] += 1
        if status == 204:
            self._nothing_left(token, active)
            return None
        if status != 200:
            self.errors.append(f"claim {status}: {data[:200]!r}")
            active.remove(token)
            return None
        return json.loads(data)["id"]

    def _nothing_left(self, token: str, active: list[str]) -> None:
        """A claim said "nothing left": drop the annotator, and count it when
        images were still open to them (``open_for``)."""
        active.remove(token)
        if still_open := open_for(token, self.study_id):
            self.false_empty.append(still_open)

    def run(self) -> None:
        active = list(self.tokens)
        held: dict[str, str] = {}  # chain: the item each annotator rates next
        query = "?next=1" if self.chain else ""
        while active and time.monotonic() < self.deadline:
            for token in list(active):
                if time.monotonic() >= self.deadline:
                    break
                assignment = held.pop(token, None) or self._claim(token, active)
                if assignment is None:
                    continue
                body = json.dumps({"score": self.rng.randint(1, 7)}).encode()
                status, data, ms = self._post(
                    f"/api/v1/assignments/{assignment}/rating/{query}", token, body
                )
                self.submit_ms.append(ms)
                self.statuses[f"submit {status}"] += 1
                if status != 201:
                    self.errors.append(f"submit {status}: {data[:200]!r}")
                    continue
                with self.stats["lock"]:
                    self.stats["ratings"] += 1
                if self.chain:
                    following = json.loads(data)["next"]
                    if following is None:
                        self.statuses["next null"] += 1
                        self._nothing_left(token, active)
                    else:
                        held[token] = following["id"]
        if self.conn is not None:
            self.conn.close()
        from django.conf import settings

        if settings.configured:  # hot_floor's clients run without Django
            from django.db import connection

            connection.close()  # this thread's, opened only by open_for


def run_clients(
    args, port, study_id, tokens, deadline, meter: CpuMeter
) -> tuple[list[Client], float]:
    rng = random.Random(args.seed)
    stats = {"lock": threading.Lock(), "ratings": 0}
    shuffled = list(tokens)
    rng.shuffle(shuffled)
    clients = [
        Client(
            port,
            study_id,
            shuffled[i :: args.clients],
            deadline,
            random.Random(args.seed * 1000 + i),
            stats,
            chain=getattr(args, "chain", False),  # scale.py builds its own args
        )
        for i in range(args.clients)
    ]
    t0 = time.perf_counter()
    for c in clients:
        c.start()
    last = 0
    while any(c.is_alive() for c in clients):
        time.sleep(5)
        meter.sample()
        n = stats["ratings"]
        el = time.perf_counter() - t0
        print(f"  {el:6.1f}s  {n:7d} ratings  {(n - last) / 5:6.0f}/s", flush=True)
        last = n
    return clients, time.perf_counter() - t0


# --- reporting ----------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))
    return values[k]


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<22} (none)"
    return (
        f"{name:<22} n={len(values):<7d} p50={pct(values, 50):7.2f}  "
        f"p95={pct(values, 95):7.2f}  p99={pct(values, 99):7.2f}  "
        f"max={max(values):8.2f}  mean={statistics.fmean(values):6.2f} ms"
    )


def log_ms(field: str) -> float:
    """An access line's time field in milliseconds: gunicorn and uWSGI write
    microseconds, granian (our format) milliseconds with an "ms" suffix."""
    return float(field[:-2]) if field.endswith("ms") else int(field) / 1000


def parse_access_log(path: Path) -> tuple[dict[str, list[float]], dict[str, int]]:
    times: dict[str, list[float]] = {"claim": [], "submit": []}
    statuses: dict[str, int] = defaultdict(int)
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        method, url, status, micros = parts
        if method != "POST":
            continue
        kind = (
            "claim" if CLAIM_RE.match(url) else "submit" if RATE_RE.match(url) else None
        )
        if kind:
            times[kind].append(log_ms(micros))
            statuses[f"{kind} {status}"] += 1
    return times, statuses


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = server_env(args)
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
    sys.path.insert(0, str(ROOT))
    data_dir = Path(args.data_dir)
    run_dir = data_dir / "bench-run"
    subprocess.run(["rm", "-rf", str(data_dir / "media"), str(run_dir)], check=True)
    run_dir.mkdir(parents=True, exist_ok=True)

    print(f"database {args.db_name}: recreate and migrate", flush=True)
    recreate_database(args)
    subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "migrate", "--no-input", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    import django

    django.setup()
    t0 = time.perf_counter()
    study_id, tokens = build_study(args)
    print(
        f"study {study_id}: {args.images} images x {args.raters} raters, "
        f"{len(tokens)} annotators, built in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    from django.db import connection

    connection.close()  # the harness holds no connection while the server runs

    port = args.port or free_port()
    access_log = run_dir / "access.log"
    server = start_server(args, env, port, access_log)
    failures: list[str] = []
    try:
        wait_ready(port, tokens[0], server)
        print(
            f"{args.server} on 127.0.0.1:{port}: {args.workers} "
            + (args.worker_class + " " if args.server == "gunicorn" else "")
            + "workers"
            + (
                f" x {args.threads} threads"
                if args.worker_class == "gthread" or args.server != "gunicorn"
                else ""
            )
            + f"; {args.clients} clients",
            flush=True,
        )
        deadline = time.monotonic() + args.max_seconds
        load_before = os.getloadavg()[0]
        meter = CpuMeter(server, args)
        client_cpu = time.process_time()
        clients, elapsed = run_clients(args, port, study_id, tokens, deadline, meter)
        client_cpu = time.process_time() - client_cpu
        meter.sample()
        cpu = meter.used()
        cpu["clients"] = client_cpu
        load_after = os.getloadavg()[0]
    finally:
        stop_server(server)

    from annotation.models import Rating

    ratings = Rating.objects.filter(study_id=study_id).count()
    claim_client = [x for c in clients for x in c.claim_ms]
    submit_client = [x for c in clients for x in c.submit_ms]
    client_status: dict[str, int] = defaultdict(int)
    for c in clients:
        for k, v in c.statuses.items():
            client_status[k] += v
    errors = [e for c in clients for e in c.errors]
    false_empty = [n for c in clients for n in c.false_empty]
    server_times, server_status = parse_access_log(access_log)

    print()
    print(
        f"ratings:    {ratings} in {elapsed:.1f}s = {ratings / elapsed:.0f} ratings/s"
    )
    print(f"requests:   {dict(sorted(client_status.items()))}")
    from django.db.models import Count

    from annotation.models import Assignment

    dealt = dict(
        Assignment.objects.filter(study_id=study_id)
        .values_list("dealt_by")
        .annotate(n=Count("pk"))
        .order_by()
    )
    print(f"policy:     {args.policy} (assignments dealt: {dealt})")
    print(
        f"load avg:   {load_before:.1f} before, {load_after:.1f} after "
        f"(1 min; {os.cpu_count()} CPUs; other processes share the machine)"
    )
    per = "one rate+next request" if args.chain else "claim + submit"
    print(
        f"CPU per rating ({per}): "
        + ", ".join(f"{k} {v / max(ratings, 1) * 1000:.2f} ms" for k, v in cpu.items())
        + f"; total {sum(cpu.values()) / max(ratings, 1) * 1000:.2f} ms"
    )
    print(
        f"server-side latency ({args.server}'s access log, {SERVER_TIME[args.server]}):"
    )
    rated = "rate+next" if args.chain else "submit"
    print("  " + summary("claim", server_times["claim"]))
    print("  " + summary(rated, server_times["submit"]))
    print("client-side latency (includes queueing and client overhead):")
    print("  " + summary("claim", claim_client))
    print("  " + summary(rated, submit_client))
    print(
        "204 (or next null) while images were open to the annotator: "
        f"{len(false_empty)}"
        + (f" (open images: {false_empty[:10]})" if false_empty else "")
    )
    if false_empty:
        failures.append(f"{len(false_empty)} claims answered 204 with images open")
    if errors:
        print(f"{len(errors)} unexpected responses, first: {errors[:3]}")
        failures.append(f"{len(errors)} unexpected responses")
    if time.monotonic() >= deadline and ratings < args.images * args.raters:
        # A run that finished its last rating after the deadline is complete.
        failures.append(f"stopped by --max-seconds {args.max_seconds}")

    failures += verify(study_id, args.raters)
    target = {
        "claim p95 < 20 ms": pct(server_times["claim"], 95) < 20,
        "submit p95 < 20 ms": pct(server_times["submit"], 95) < 20,
        ">= 300 ratings/s": ratings / elapsed >= 300,
    }
    print(
        "targets:    "
        + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in target.items())
    )
    if failures:
        print("VERIFY FAILED:")
        for f in failures:
            print("  " + f)
    else:
        print(
            "verify:     OK (every image has exactly "
            f"{args.raters} valid ratings, no duplicate pairs, lease_count 0, "
            "rating_count = rating rows)"
        )
    from django.db import connections

    connections.close_all()
    if not args.keep_db:
        drop_database(args)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
