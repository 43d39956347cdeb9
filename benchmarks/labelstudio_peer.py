"""The same claim-and-rate load against Palate and Label Studio, in alternating rounds.

Label Studio 1.23.2 runs in production form: its own virtualenv outside the
repository (never in requirements.txt), its own PostgreSQL database, DEBUG off,
gunicorn with the same shape as Palate's (``--workers`` x ``--threads`` gthread),
its shipped settings module, with persistent database connections like Palate's
(``--ls-conn-max-age``, default 60; Label Studio ships 0, a new connection per
request, which is slower and hides its backends' CPU from the meter). One project
with ``--images`` image tasks, ``maximum_annotations`` = ``--raters`` (overlap on
every task), a 1-7 ``Rating`` control, and ``--annotators`` organisation members
with API tokens.

Each client thread owns a share of the annotators and cycles through them, one
"claim" and one "rating" each turn, on one keep-alive connection:

* Palate: ``POST /api/v1/studies/{id}/assignments/next/`` then
  ``POST /api/v1/assignments/{id}/rating/`` (exactly ``assignment_load.py``'s client);
* Label Studio: ``GET /api/projects/{id}/next/`` (its label stream: the next task,
  locked for this user) then ``POST /api/tasks/{id}/annotations/`` with the rating.

Rounds alternate Palate, Label Studio, Palate, ... (``--pairs`` of each), each
``--round-seconds`` long; between Palate rounds the study is reset to no ratings
(so every round starts from the same state). Per round it prints ratings/s,
server-side p50/p95 (gunicorn ``%(D)s``), CPU per rating of the web processes and
of the PostgreSQL backends, and the load average; then the ratio Palate / Label
Studio for each adjacent pair and their median.

    .venv/bin/python benchmarks/labelstudio_peer.py            # installs LS if needed
    .venv/bin/python benchmarks/labelstudio_peer.py --pairs 1 --round-seconds 30

``--ls-venv`` (default ``/work/ls-venv``) is created with ``python3.11 -m venv`` and
``pip install label-studio==1.23.2 gunicorn`` when it has no ``label-studio`` yet.
Creates and drops the databases ``--palate-db`` and ``--ls-db``; only 127.0.0.1 is
contacted (Sentry and analytics are switched off).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import assignment_load as palate  # noqa: E402 (after the path set-up)

LS_VERSION = "1.23.2"
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Rating name="rating" toName="image" maxRating="7"/></View>'
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--annotators", type=int, default=300)
    p.add_argument("--raters", type=int, default=15)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--pairs", type=int, default=3, help="rounds of each system")
    p.add_argument("--round-seconds", type=float, default=120)
    p.add_argument(
        "--server",
        default="gunicorn",
        choices=palate.SERVERS,
        help="Palate's WSGI server (Label Studio keeps its gunicorn)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--palate-db", default="palate_peer")
    p.add_argument("--ls-db", default="ls_peer")
    p.add_argument("--ls-venv", default="/work/ls-venv")
    p.add_argument("--data-dir", default="/tmp/palate-peer")
    p.add_argument(
        "--ls-conn-max-age",
        type=int,
        default=60,
        help="CONN_MAX_AGE for Label Studio (it ships 0: a connection per request); "
        "60 gives it Palate's persistent connections (0: as shipped)",
    )
    p.add_argument(
        "--palate-only",
        action="store_true",
        help="no Label Studio: Palate's rounds alone, with the reset between them "
        "(the set-up check where Label Studio cannot be installed)",
    )
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


# --- Label Studio ------------------------------------------------------------


def ls_install(venv: Path) -> None:
    if (venv / "bin" / "label-studio").exists():
        return
    print(f"installing label-studio=={LS_VERSION} into {venv} (a few minutes)")
    subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            f"label-studio=={LS_VERSION}",
            "gunicorn",
        ],
        check=True,
    )


def ls_path(venv: Path) -> Path:
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import label_studio, os; print(os.path.dirname(label_studio.__file__))",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def ls_env(args) -> dict[str, str]:
    """Label Studio's shipped settings module, configured through its environment
    variables; the only addition is CONN_MAX_AGE, through a module that imports
    everything else from ``core.settings.label_studio``."""
    settings_dir = Path(args.data_dir) / "ls-settings"
    settings_dir.mkdir(parents=True, exist_ok=True)
    # Label Studio's settings read django.conf.settings while they are still being
    # imported (sentry's init): that nested read must find Label Studio's own
    # module, as it does without this wrapper, hence the environment switch.
    (settings_dir / "bench_settings.py").write_text(
        "import os\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'core.settings.label_studio'\n"
        "from core.settings.label_studio import *  # noqa\n"
        f"DATABASES['default']['CONN_MAX_AGE'] = {args.ls_conn_max_age}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
    env.pop("DATABASE_URL", None)
    env.update(
        PYTHONPATH=str(settings_dir),
        DJANGO_SETTINGS_MODULE="bench_settings",
        DJANGO_DB="default",
        POSTGRE_NAME=args.ls_db,
        POSTGRE_USER="postgres",
        POSTGRE_PASSWORD="postgres",
        POSTGRE_HOST="127.0.0.1",
        POSTGRE_PORT="5432",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        BASE_DATA_DIR=str(Path(args.data_dir) / "ls-data"),
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
        LATEST_VERSION_CHECK="false",
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="false",
    )
    return env


# Run by Label Studio's own interpreter: owner, organisation (legacy API tokens on,
# the classic "Authorization: Token" header), annotators, project.
LS_SETUP = """
import json, sys
import django
django.setup()
from organizations.models import Organization
from projects.models import Project
from rest_framework.authtoken.models import Token
from users.models import User

n, raters, config = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
owner = User.objects.create_user(email="owner@bench.local", password=None)
owner.is_staff = owner.is_superuser = True
owner.save()
org = Organization.create_organization(
    created_by=owner, title="Bench", legacy_api_tokens_enabled=True
)
owner.active_organization = org
owner.save(update_fields=["active_organization"])
tokens = []
for i in range(n):
    user = User.objects.create_user(email=f"ann{i:04d}@bench.local", password=None)
    org.add_user(user)
    user.active_organization = org
    user.save(update_fields=["active_organization"])
    tokens.append(Token.objects.get_or_create(user=user)[0].key)
project = Project.objects.create(
    title="Bench", created_by=owner, organization=org, label_config=config,
    maximum_annotations=raters, overlap_cohort_percentage=100,
    show_skip_button=False,
)
print(json.dumps({
    "project": project.pk,
    "owner": Token.objects.get_or_create(user=owner)[0].key,
    "tokens": tokens,
}))
"""


def ls_prepare(args, venv: Path, lsdir: Path) -> dict:
    palate.recreate_database(argparse.Namespace(pg_url=args.pg_url, db_name=args.ls_db))
    env = ls_env(args)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [py, "manage.py", "migrate", "--no-input", "-v0"],
        cwd=lsdir,
        env=env,
        check=True,
    )
    out = subprocess.run(
        [py, "-c", LS_SETUP, str(args.annotators), str(args.raters), LABEL_CONFIG],
        cwd=lsdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def ls_import_tasks(port: int, project: int, owner_token: str, n: int) -> None:
    tasks = [{"image": f"/static/bench/{i}.png"} for i in range(n)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request(
        "POST",
        f"/api/projects/{project}/import",
        body=json.dumps(tasks),
        headers={
            "Authorization": f"Token {owner_token}",
            "Content-Type": "application/json",
        },
    )
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 201:
        raise SystemExit(f"Label Studio import: {resp.status} {body[:300]!r}")
    print(f"  imported: {json.loads(body).get('task_count')} tasks")


def ls_start(args, venv: Path, lsdir: Path, port: int, log: Path):
    cmd = palate.gunicorn_command(
        venv / "bin" / "gunicorn",
        "core.wsgi:application",
        port,
        log,
        workers=args.workers,
        threads=args.threads,
    )
    return subprocess.Popen(cmd, cwd=lsdir, env=ls_env(args), start_new_session=True)


class LsClient(palate.Client):
    """``assignment_load.Client`` speaking Label Studio's label stream API."""

    timeout = 120  # Label Studio's first requests are slow

    def run(self) -> None:
        active = list(self.tokens)
        next_path = f"/api/projects/{self.study_id}/next/"
        while active and time.monotonic() < self.deadline:
            for token in list(active):
                if time.monotonic() >= self.deadline:
                    break
                status, data, ms = self._request("GET", next_path, token, None)
                self.claim_ms.append(ms)
                self.statuses[f"claim {status}"] += 1
                if status == 404:  # "There are no tasks for <user>"
                    active.remove(token)
                    continue
                if status != 200:
                    self.errors.append(f"next {status}: {data[:200]!r}")
                    active.remove(token)
                    continue
                task = json.loads(data)["id"]
                score = self.rng.randint(1, 7)
                body = json.dumps(
                    {
                        "result": [
                            {
                                "from_name": "rating",
                                "to_name": "image",
                                "type": "rating",
                                "value": {"rating": score},
                            }
                        ],
                        "lead_time": 1.0,
                    }
                ).encode()
                status, data, ms = self._request(
                    "POST", f"/api/tasks/{task}/annotations/", token, body
                )
                self.submit_ms.append(ms)
                self.statuses[f"submit {status}"] += 1
                if status == 201:
                    with self.stats["lock"]:
                        self.stats["ratings"] += 1
                else:
                    self.errors.append(f"annotate {status}: {data[:200]!r}")
        if self.conn is not None:
            self.conn.close()


# --- rounds ---------------------------------------------------------------------


def palate_reset(study_id: int) -> None:
    """Back to the state before the first rating: no ratings, no assignments, no
    quality-control statistics, every counter 0, participations not started (so
    each round starts alike).

    No ANALYZE: it would record the just-emptied tables as holding 0 rows, and
    PostgreSQL would then plan the engine's statements for empty tables for as
    long as nothing analyzes them again (on a server with autovacuum off, like
    this machine's, the whole round: PostgreSQL's CPU per rating went from 1.7 to
    2.5-6.7 ms). TRUNCATE leaves them as on a fresh database, "never analyzed",
    which is how round 1 starts."""
    from django.db import connection

    from annotation.models import (
        AnnotatorQuality,
        Assignment,
        Image,
        Participation,
        Rating,
    )

    with connection.cursor() as cursor:
        cursor.execute(
            f"TRUNCATE {Rating._meta.db_table}, {Assignment._meta.db_table}, "
            f"{AnnotatorQuality._meta.db_table} CASCADE"
        )
    Image.objects.filter(study_id=study_id).update(rating_count=0, lease_count=0)
    Participation.objects.filter(study_id=study_id).update(
        started_at=None, completed_at=None
    )
    with connection.cursor() as cursor:
        # The two tables just rewritten: drop their dead rows (round 1 has none).
        cursor.execute(f"VACUUM {Image._meta.db_table}, {Participation._meta.db_table}")
    connection.close()


def run_round(args, kind, port, target_id, tokens, server, db_name, log: Path) -> dict:
    offset = log.stat().st_size if log.exists() else 0
    meter_args = argparse.Namespace(pg_url=args.pg_url, db_name=db_name)
    meter = palate.CpuMeter(server, meter_args)
    load_before = os.getloadavg()[0]
    rng = random.Random(args.seed)
    shuffled = list(tokens)
    rng.shuffle(shuffled)
    stats = {"lock": threading.Lock(), "ratings": 0}
    deadline = time.monotonic() + args.round_seconds
    cls = LsClient if kind == "labelstudio" else palate.Client
    # servers.py's --chain: Palate's clients rate with ?next=1.
    chain = (
        {"chain": True} if kind == "palate" and getattr(args, "chain", False) else {}
    )
    clients = [
        cls(
            port,
            target_id,
            shuffled[i :: args.clients],
            deadline,
            random.Random(args.seed * 1000 + i),
            stats,
            **chain,
        )
        for i in range(args.clients)
    ]
    t0, own0 = time.perf_counter(), time.process_time()
    for c in clients:
        c.start()
    while any(c.is_alive() for c in clients):
        time.sleep(2)
        meter.sample()
    elapsed, own = time.perf_counter() - t0, time.process_time() - own0
    meter.sample()
    cpu = meter.used()
    n = stats["ratings"]
    with log.open() as fh:
        fh.seek(offset)
        lines = fh.read().splitlines()
    claim, submit = [], []
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[2] in ("200", "201"):
            path = parts[1].split("?", 1)[0]  # uWSGI logs the query string
            if path.endswith("/next/"):
                claim.append(palate.log_ms(parts[3]))
            elif path.endswith(("/rating/", "/annotations/")):
                submit.append(palate.log_ms(parts[3]))
    errors = [e for c in clients for e in c.errors]
    return {
        "kind": kind,
        "ratings": n,
        "rate": n / elapsed,
        "claim_p50": palate.pct(claim, 50),
        "claim_p95": palate.pct(claim, 95),
        "submit_p50": palate.pct(submit, 50),
        "submit_p95": palate.pct(submit, 95),
        "web_ms": cpu["web"] / max(n, 1) * 1000,
        "pg_ms": cpu["postgres"] / max(n, 1) * 1000,
        "client_ms": own / max(n, 1) * 1000,
        "load": (load_before, os.getloadavg()[0]),
        "errors": errors,
    }


def _print_round(i: int, r: dict) -> None:
    print(
        f"  round {i + 1:2d} {r['kind']:<11} {r['ratings']:6d} ratings "
        f"{r['rate']:7.1f}/s  claim p50/p95 {r['claim_p50']:6.1f}/{r['claim_p95']:6.1f}"
        f"  submit {r['submit_p50']:6.1f}/{r['submit_p95']:6.1f} ms  CPU/rating web "
        f"{r['web_ms']:6.1f} + pg {r['pg_ms']:5.1f} ms  load {r['load'][0]:.1f}"
        f"->{r['load'][1]:.1f}"
        + (
            f"  {len(r['errors'])} errors, first {r['errors'][0]}"
            if r["errors"]
            else ""
        ),
        flush=True,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    venv = Path(args.ls_venv)
    if not args.palate_only:
        ls_install(venv)
    data = Path(args.data_dir)
    subprocess.run(["rm", "-rf", str(data)], check=True)
    (data / "logs").mkdir(parents=True)

    # Palate: the database, study and server of assignment_load.py.
    pargs = palate.parse_args(
        [
            "--images",
            str(args.images),
            "--annotators",
            str(args.annotators),
            "--raters",
            str(args.raters),
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--server",
            args.server,
            "--db-name",
            args.palate_db,
            "--pg-url",
            args.pg_url,
            "--data-dir",
            str(data / "palate"),
            "--seed",
            str(args.seed),
        ]
    )
    env = palate.server_env(pargs)
    os.environ.update(env)
    sys.path.insert(0, str(palate.ROOT))
    print(f"Palate: database {args.palate_db}, migrate, build the study", flush=True)
    palate.recreate_database(pargs)
    subprocess.run(
        [str(palate.VENV_BIN / "python"), "manage.py", "migrate", "--no-input", "-v0"],
        cwd=palate.ROOT,
        env=env,
        check=True,
    )
    import django

    django.setup()
    study_id, ptokens = palate.build_study(pargs)
    from django.db import connection

    connection.close()
    if args.palate_only:
        return palate_alone(args, pargs, env, study_id, ptokens)

    print(
        f"Label Studio {LS_VERSION}: database {args.ls_db}, migrate, users", flush=True
    )
    lsdir = ls_path(venv)
    ls = ls_prepare(args, venv, lsdir)

    plog, llog = data / "logs" / "palate-access.log", data / "logs" / "ls-access.log"
    pport, lport = palate.free_port(), palate.free_port()
    pserver = palate.start_server(pargs, env, pport, plog)
    lserver = ls_start(args, venv, lsdir, lport, llog)
    results = []
    try:
        palate.wait_ready(pport, ptokens[0], pserver)
        palate.wait_ready(
            lport,
            ls["owner"],
            lserver,
            120,
            path="/api/projects/",
            name="Label Studio's gunicorn",
        )
        ls_import_tasks(lport, ls["project"], ls["owner"], args.images)
        print(
            f"Palate on {args.server}, Label Studio on gunicorn gthread, both "
            f"{args.workers} x {args.threads}, "
            f"{args.clients} clients, {args.round_seconds:.0f} s rounds",
            flush=True,
        )
        for i in range(2 * args.pairs):
            if i % 2 == 0:
                if i:
                    palate_reset(study_id)
                r = run_round(
                    args, "palate", pport, study_id, ptokens, pserver,
                    args.palate_db, plog,
                )  # fmt: skip
            else:
                r = run_round(
                    args, "labelstudio", lport, ls["project"], ls["tokens"], lserver,
                    args.ls_db, llog,
                )  # fmt: skip
            results.append(r)
            _print_round(i, r)
    finally:
        palate.stop_server(pserver)
        palate.stop_server(lserver)
    ratios = [
        results[i]["rate"] / results[i + 1]["rate"]
        for i in range(0, len(results) - 1, 2)
        if results[i + 1]["rate"] > 0
    ]
    ratios += [
        results[i + 1]["rate"] / results[i]["rate"]
        for i in range(1, len(results) - 1, 2)
        if results[i]["rate"] > 0
    ]
    print(
        "Palate / Label Studio, adjacent pairs: "
        + ", ".join(f"{x:.1f}" for x in ratios)
        + (f"; median {statistics.median(ratios):.1f}x" if ratios else "")
    )
    for name in (args.palate_db, args.ls_db):
        palate.drop_database(argparse.Namespace(pg_url=args.pg_url, db_name=name))
    return 1 if any(r["errors"] for r in results) else 0


def palate_alone(args, pargs, env, study_id: int, tokens: list[str]) -> int:
    """``--pairs`` Palate rounds with the reset between them, no Label Studio."""
    log = Path(args.data_dir) / "logs" / "palate-access.log"
    port = palate.free_port()
    server = palate.start_server(pargs, env, port, log)
    results = []
    try:
        palate.wait_ready(port, tokens[0], server, name=args.server)
        for i in range(args.pairs):
            if i:
                palate_reset(study_id)
            r = run_round(
                args, "palate", port, study_id, tokens, server, args.palate_db, log
            )
            results.append(r)
            _print_round(i, r)
    finally:
        palate.stop_server(server)
        palate.drop_database(
            argparse.Namespace(pg_url=args.pg_url, db_name=args.palate_db)
        )
    print(
        "Palate alone: "
        + ", ".join(f"{r['rate']:.1f}" for r in results)
        + " ratings/s (no Label Studio: --palate-only)"
    )
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
