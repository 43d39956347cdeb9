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
CLAIM_RE = re.compile(r"^/api/v1/studies/\d+/assignments/next/$")
RATE_RE = re.compile(r"^/api/v1/assignments/[\w-]+/rating/$")


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
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=2, help="threads per gthread worker")
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
        DATABASE_SYNCHRONOUS_COMMIT=args.synchronous_commit,
        PALATE_DATA_DIR=args.data_dir,
        CELERY_BROKER_URL="memory://",
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
    with transaction.atomic():
        for i in range(args.annotators):
            annotator = services.annotator_create(
                source="import", external_id=f"bench-{i}", username=f"bench{i:04d}"
            )
            services.participation_consent(
                annotator=annotator, study=study, token=study.invite_token
            )
            tokens.append(Token.objects.create(user=annotator.user).key)
    return study.pk, tokens


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


def start_server(args, env, port: int, access_log: Path) -> subprocess.Popen:
    cmd = gunicorn_command(
        VENV_BIN / "gunicorn",
        "config.wsgi",
        port,
        access_log,
        workers=args.workers,
        threads=args.threads,
        worker_class=args.worker_class,
        worker_tmp_dir=args.worker_tmp_dir,
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
    """CPU used by the gunicorn processes and by the PostgreSQL backends of the
    benchmark database. Sampled every few seconds, because backends come and go
    (DATABASE_CONN_MAX_AGE) and an exited process no longer shows its time."""

    def __init__(self, server: subprocess.Popen, args: argparse.Namespace):
        self.server, self.args = server, args
        self.start: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.sample(first=True)

    def _pids(self) -> list[tuple[str, int]]:
        import psycopg2

        pids = [("gunicorn", self.server.pid)]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.server.pid:
                pids.append(("gunicorn", int(stat.parent.name)))
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
        out = {"gunicorn": 0.0, "postgres": 0.0}
        for key, t in self.last.items():
            out[key[0]] += t - self.start.get(key, 0.0)
        return out


# --- clients ------------------------------------------------------------------


class Client(threading.Thread):
    """One keep-alive connection that cycles through its annotators, one claim and
    one submit each turn, dropping an annotator when a claim answers 204."""

    timeout = 60  # seconds for one request

    def __init__(self, port, study_id, tokens, deadline, rng, stats):
        super().__init__(daemon=True)
        self.port, self.study_id, self.tokens = port, study_id, list(tokens)
        self.deadline, self.rng, self.stats = deadline, rng, stats
        self.claim_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.statuses: dict[str, int] = defaultdict(int)
        self.errors: list[str] = []
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

    def run(self) -> None:
        active = list(self.tokens)
        claim_path = f"/api/v1/studies/{self.study_id}/assignments/next/"
        while active and time.monotonic() < self.deadline:
            for token in list(active):
                if time.monotonic() >= self.deadline:
                    break
                status, data, ms = self._post(claim_path, token, None)
                self.claim_ms.append(ms)
                self.statuses[f"claim {status}"] += 1
                if status == 204:
                    active.remove(token)
                    continue
                if status != 200:
                    self.errors.append(f"claim {status}: {data[:200]!r}")
                    active.remove(token)
                    continue
                assignment = json.loads(data)["id"]
                body = json.dumps({"score": self.rng.randint(1, 7)}).encode()
                status, data, ms = self._post(
                    f"/api/v1/assignments/{assignment}/rating/", token, body
                )
                self.submit_ms.append(ms)
                self.statuses[f"submit {status}"] += 1
                if status == 201:
                    with self.stats["lock"]:
                        self.stats["ratings"] += 1
                else:
                    self.errors.append(f"submit {status}: {data[:200]!r}")
        if self.conn is not None:
            self.conn.close()


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
            times[kind].append(int(micros) / 1000)
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
            f"gunicorn on 127.0.0.1:{port}: {args.workers} {args.worker_class} workers"
            + (f" x {args.threads} threads" if args.worker_class == "gthread" else "")
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
    server_times, server_status = parse_access_log(access_log)

    print()
    print(
        f"ratings:    {ratings} in {elapsed:.1f}s = {ratings / elapsed:.0f} ratings/s"
    )
    print(f"requests:   {dict(sorted(client_status.items()))}")
    print(
        f"load avg:   {load_before:.1f} before, {load_after:.1f} after "
        f"(1 min; {os.cpu_count()} CPUs; other processes share the machine)"
    )
    print(
        "CPU per rating (claim + submit): "
        + ", ".join(f"{k} {v / max(ratings, 1) * 1000:.2f} ms" for k, v in cpu.items())
        + f"; total {sum(cpu.values()) / max(ratings, 1) * 1000:.2f} ms"
    )
    print("server-side latency (gunicorn %(D)s, worker time):")
    print("  " + summary("claim", server_times["claim"]))
    print("  " + summary("submit", server_times["submit"]))
    print("client-side latency (includes queueing and client overhead):")
    print("  " + summary("claim", claim_client))
    print("  " + summary("submit", submit_client))
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
