"""Soak: the whole platform under chaos until a study is full, then the one
invariant check.

60 HTTP clients (keep-alive, one thread each) claim and rate through a real
gunicorn on 127.0.0.1 until every image of a 2,000-image study has its 15 valid
ratings, while the harness

* kills (SIGKILL) and restarts the Celery worker that runs the lease sweeps,
* kills (SIGKILL) and restarts the web server, so requests in flight are lost
  and clients retry them (a retried rating answers 201 or, if the first one had
  committed, 200),
* lets clients abandon leases (they expire after ``--lease-seconds`` and are
  swept back) and repeat rating posts on purpose,
* excludes two annotators mid-run (their valid ratings stop counting and their
  slots are dealt again).

Then: no answer 500, every image exactly ``--raters`` valid ratings,
``integrity_check()`` finds no drift (counters equal rows, no duplicate pair,
nothing valid from an excluded annotator). Bounded by ``--max-seconds`` and
``--max-requests``; only 127.0.0.1 is contacted (PostgreSQL, Redis, gunicorn).

    .venv/bin/python benchmarks/soak.py                               # full run
    .venv/bin/python benchmarks/soak.py --images 200 --clients 16 \\
        --annotators 60 --max-seconds 300                             # smoke run

Builds the study and server with benchmarks/assignment_load.py's pieces, and the
worker with core.processes. Creates and drops the database ``--db-name``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import assignment_load as load  # noqa: E402

from core.processes import celery_worker_start, process_kill, process_stop  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--annotators", type=int, default=300)
    p.add_argument("--clients", type=int, default=60)
    p.add_argument("--raters", type=int, default=15)
    p.add_argument("--quota", type=int, default=0, help="0: 1.2 x fair share")
    p.add_argument("--lease-seconds", type=int, default=20)
    p.add_argument("--abandon", type=float, default=0.03, help="share of leases")
    p.add_argument("--repeat", type=float, default=0.05, help="share re-posted")
    p.add_argument("--max-seconds", type=float, default=1800)
    p.add_argument("--max-requests", type=int, default=400_000)
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--db-name", default="palate_soak")
    p.add_argument("--broker", default="redis://127.0.0.1:6379/9")
    p.add_argument("--data-dir", default="/tmp/palate-soak")
    p.add_argument("--conn-max-age", default="60")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    for url in (args.pg_url, args.broker):
        if "127.0.0.1" not in url and "localhost" not in url:
            p.error(f"{url}: the soak runs on loopback only")
    return args


class Shared:
    """What the clients and the harness share."""

    def __init__(self, port: int):
        self.port = port
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.done = threading.Event()
        self.excluded_tokens: set[str] = set()

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n


class SoakClient(load.Client):
    """assignment_load's keep-alive client, with chaos: abandoned leases, repeated
    posts, and retries across server restarts."""

    def __init__(self, shared: Shared, study_id, tokens, deadline, rng, args):
        super().__init__(shared.port, study_id, tokens, deadline, rng, {})
        self.shared, self.args = shared, args

    def post(self, path: str, token: str, body: bytes | None):
        """Until the server answers (it may be down for a restart)."""
        for attempt in range(600):
            try:
                self.port = self.shared.port
                return self._post(path, token, body)
            except (OSError, ConnectionError) as exc:
                self.conn = None
                self.shared.add("connection errors")
                if body is not None and attempt == 0:
                    self.shared.add("rating posts retried after a lost connection")
                if time.monotonic() > self.deadline:
                    raise TimeoutError("server down past the deadline") from exc
                time.sleep(0.5)
        raise TimeoutError("server did not come back")

    def turn(self, token: str) -> str:
        claim = f"/api/v1/studies/{self.study_id}/assignments/next/"
        status, data, _ = self.post(claim, token, None)
        self.shared.add(f"claim {status}")
        if status != 200:
            return "forbidden" if status == 403 else "idle" if status == 204 else "err"
        assignment = json.loads(data)["id"]
        if self.rng.random() < self.args.abandon:
            self.shared.add("leases abandoned")
            return "ok"
        url = f"/api/v1/assignments/{assignment}/rating/"
        body = json.dumps({"score": self.rng.randint(1, 7)}).encode()
        status, data, _ = self.post(url, token, body)
        self.shared.add(f"submit {status}")
        if status == 403:
            return "forbidden"
        if status in (201, 200) and self.rng.random() < self.args.repeat:
            again, _, _ = self.post(url, token, body)  # a client's own retry
            self.shared.add(f"repeated submit {again}")
        if status >= 500:
            self.errors.append(f"submit {status}: {data[:200]!r}")
        return "ok"

    def run(self) -> None:
        active = list(self.tokens)
        try:
            while active and not self.shared.done.is_set():
                if time.monotonic() > self.deadline:
                    break
                idle = 0
                for token in list(active):
                    if self.shared.counts["requests"] >= self.args.max_requests:
                        return
                    self.shared.add("requests")
                    outcome = self.turn(token)
                    if outcome == "forbidden":
                        active.remove(token)  # excluded mid-run
                    elif outcome == "idle":
                        idle += 1
                    elif outcome == "err":
                        self.errors.append("claim answered neither 200, 204 nor 403")
                if idle == len(active):
                    # Nothing for these annotators right now: the rest is leased
                    # (maybe abandoned, waiting to expire). Ask again shortly.
                    time.sleep(1.0)
        except TimeoutError as exc:
            self.errors.append(repr(exc))
        finally:
            if self.conn is not None:
                self.conn.close()


class Harness:
    """Web server and worker processes, and the chaos schedule."""

    def __init__(self, args, env, run_dir: Path):
        self.args, self.env, self.run_dir = args, env, run_dir
        self.port = args.port or load.free_port()
        self.server = None
        self.worker = None
        self.worker_log = open(run_dir / "worker.log", "a")  # noqa: SIM115
        self.events: list[str] = []
        self.t0 = time.monotonic()

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:7.1f}s  {what}"
        self.events.append(line)
        print("  " + line, flush=True)

    def start_server(self, token: str) -> None:
        self.server = load.start_server(
            self.args, self.env, self.port, self.run_dir / "access.log"
        )
        load.wait_ready(self.port, token, self.server)

    def start_worker(self, n: int) -> None:
        self.worker = celery_worker_start(
            env=self.env, name=f"soak{n}@%h", loglevel="info", log=self.worker_log
        )

    def stop(self) -> None:
        if self.server is not None:
            load.stop_server(self.server)
        if self.worker is not None:
            process_stop(self.worker)
        self.worker_log.close()


def chaos(harness: Harness, shared: Shared, study_id: int, token: str, victims):
    """Runs in the main thread while the clients work."""
    from annotation import services
    from annotation.models import Annotator, Image
    from config.celery import app

    app.conf.broker_url = harness.args.broker
    total = harness.args.images * harness.args.raters
    plan = [
        (0.20, "kill worker"),
        (0.35, "exclude"),
        (0.50, "kill web"),
        (0.65, "exclude"),
        (0.80, "kill worker"),
    ]
    last_sweep = last_print = 0.0
    n_worker = 1
    while not shared.done.is_set():
        time.sleep(1.0)
        now = time.monotonic()
        if now - last_sweep >= 5:  # what beat would do, more often
            app.send_task("annotation.sweep_expired_leases")
            last_sweep = now
        if now - last_print >= 30:
            elapsed = now - harness.t0
            n = shared.counts["submit 201"]
            print(f"  {elapsed:7.1f}s  {n} ratings", flush=True)
            last_print = now
        done = shared.counts["submit 201"] / total
        while plan and done >= plan[0][0]:
            _, what = plan.pop(0)
            if what == "kill worker":
                process_kill(harness.worker)
                harness.note("worker killed (SIGKILL)")
                time.sleep(3)
                n_worker += 1
                harness.start_worker(n_worker)
                harness.note("worker restarted")
            elif what == "kill web":
                process_kill(harness.server)
                harness.note("web server killed (SIGKILL), requests in flight lost")
                time.sleep(2)
                harness.start_server(token)
                harness.note("web server restarted")
            else:
                annotator = Annotator.objects.get(user__username=victims.pop(0))
                reopened = services.annotator_set_status(
                    annotator=annotator, status="excluded", reason="soak"
                )
                harness.note(
                    f"{annotator.public_id} excluded, {reopened} slots reopened"
                )
        if not Image.objects.filter(
            study_id=study_id, rating_count__lt=harness.args.raters
        ).exists():
            shared.done.set()
            harness.note("study full")
        if now > harness.deadline or not any(c.is_alive() for c in harness.clients):
            shared.done.set()


def build(args) -> tuple[int, list[str], dict]:
    env = load.server_env(args)
    env.update(CELERY_BROKER_URL=args.broker, LOG_LEVEL="WARNING")
    os.environ.update({k: env[k] for k in env if k not in ("PATH",)})
    import redis

    redis.Redis.from_url(args.broker).flushdb()
    print(f"database {args.db_name}: recreate and migrate", flush=True)
    load.recreate_database(args)
    subprocess.run(
        [str(load.VENV_BIN / "python"), "manage.py", "migrate", "--no-input", "-v0"],
        cwd=load.ROOT,
        env=env,
        check=True,
    )
    import django

    django.setup()
    from annotation.models import Study

    study_id, tokens = load.build_study(args)
    Study.objects.filter(pk=study_id).update(lease_seconds=args.lease_seconds)
    return study_id, tokens, env


def check(args, study_id: int, shared: Shared, clients) -> list[str]:
    from annotation import services

    failures = load.verify(study_id, args.raters)  # sweeps, then exact counts
    drift = services.integrity_check(study_id=study_id)
    print(f"integrity:  {drift.summary()}")
    if not drift.ok:
        failures.append(f"integrity drift: {drift}")
    errors = [e for c in clients for e in c.errors]
    fives = sum(v for k, v in shared.counts.items() if k.endswith(" 500"))
    if fives:
        failures.append(f"{fives} answers 500")
    if errors:
        failures.append(f"{len(errors)} client errors, first: {errors[:3]}")
    return failures


def report(args, study_id, shared, harness, elapsed, loads) -> list[str]:
    failures = check(args, study_id, shared, harness.clients)
    from annotation.models import Rating

    valid = Rating.objects.filter(study_id=study_id, is_valid=True).count()
    invalid = Rating.objects.filter(study_id=study_id, is_valid=False).count()
    print()
    print(f"elapsed:    {elapsed:.1f}s until the study was full (or stopped)")
    print(
        f"ratings:    {valid} valid + {invalid} invalidated by the exclusions; "
        f"{shared.counts['submit 201'] / elapsed:.1f} accepted ratings/s"
    )
    print(f"requests:   {dict(sorted(shared.counts.items()))}")
    print(
        "load avg:   before {:.1f} {:.1f} {:.1f}, after {:.1f} {:.1f} {:.1f} "
        "({} CPUs; other processes share the machine)".format(
            *loads[0], *loads[1], os.cpu_count()
        )
    )
    sweeps = (
        (harness.run_dir / "worker.log").read_text().count("annotation.sweep_expired")
    )
    print(f"worker:     {sweeps} sweep log lines across restarts")
    print("events:")
    for line in harness.events:
        print("  " + line)
    if failures:
        print("SOAK FAILED:")
        for f in failures:
            print("  " + f)
    else:
        print(
            f"verify:     OK (every image exactly {args.raters} valid ratings, "
            "counters equal rows, no duplicate pair, no valid rating from an "
            "excluded annotator, no answer 500)"
        )
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = Path(args.data_dir) / "soak-run"
    subprocess.run(
        ["rm", "-rf", str(Path(args.data_dir) / "media"), str(run_dir)], check=True
    )
    run_dir.mkdir(parents=True)
    t_build = time.perf_counter()
    study_id, tokens, env = build(args)
    print(
        f"study {study_id}: {args.images} images x {args.raters} raters, "
        f"{len(tokens)} annotators, lease {args.lease_seconds}s, built in "
        f"{time.perf_counter() - t_build:.1f}s",
        flush=True,
    )
    from django.db import connection

    connection.close()
    harness = Harness(args, env, run_dir)
    harness.start_server(tokens[0])
    harness.start_worker(1)
    harness.deadline = time.monotonic() + args.max_seconds
    shared = Shared(harness.port)
    rng = random.Random(args.seed)
    shuffled = list(tokens)
    rng.shuffle(shuffled)
    clients = [
        SoakClient(
            shared,
            study_id,
            shuffled[i :: args.clients],
            harness.deadline,
            random.Random(args.seed * 1000 + i),
            args,
        )
        for i in range(args.clients)
    ]
    harness.clients = clients
    # Two annotators who will have rated by the time they are excluded.
    victims = [f"bench{i:04d}" for i in (0, 1)]
    load_before = os.getloadavg()
    harness.note(
        f"gunicorn 127.0.0.1:{harness.port} ({args.workers} {args.worker_class} "
        f"workers), 1 Celery worker, {args.clients} clients"
    )
    started = time.perf_counter()
    for c in clients:
        c.start()
    try:
        chaos(harness, shared, study_id, tokens[0], victims)
    finally:
        shared.done.set()
        for c in clients:
            c.join(timeout=120)
        elapsed = time.perf_counter() - started
        loads = (load_before, os.getloadavg())
        harness.stop()

    failures = report(args, study_id, shared, harness, elapsed, loads)
    from django.db import connections

    connections.close_all()
    if not args.keep_db:
        load.drop_database(args)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
