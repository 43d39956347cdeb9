"""WSGI servers compared: the same app, the same client, in alternating rounds.

For each server in ``--servers`` (gunicorn gthread, granian, uWSGI; each with
``--workers`` processes x ``--threads`` threads) a round is two runs back to back:

1. the floor: ``hot_floor.py``'s do-nothing WSGI function behind that server, the
   load benchmark's client, ``--floor-seconds``;
2. Palate: ``config.wsgi`` (production settings) behind that server on one study
   built once (``assignment_load.py``'s study and client), ``--round-seconds``,
   the study reset to no ratings afterwards (``labelstudio_peer.palate_reset``).

Rounds rotate the servers' order, so each server runs early and late.
``--chain``: both runs use the one-request client (ratings with ``?next=1``,
``assignment_load.py --chain``); "submit" is then that request. Per run it
prints ratings/s, server-side p50/p95 of claim and submit (each server's own
access-log time: see ``assignment_load.SERVER_TIME``), CPU per rating of the
server's processes, of the PostgreSQL backends and of the clients, and the load
average. Then per server the medians and the application's own CPU per rating:
Palate's web + PostgreSQL CPU less the floor's web CPU, same server, same client.

    .venv/bin/python benchmarks/servers.py --rounds 3
    .venv/bin/python benchmarks/servers.py --servers gunicorn,granian \\
        --env DATABASE_CONN_HEALTH_CHECKS=true      # a settings trial

Creates and drops the database ``--db-name``; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import assignment_load as palate  # noqa: E402 (the sibling scripts)
import hot_floor  # noqa: E402
import labelstudio_peer as peer  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default=",".join(palate.SERVERS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--round-seconds", type=float, default=30)
    p.add_argument("--floor-seconds", type=float, default=15)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--annotators", type=int, default=300)
    p.add_argument("--raters", type=int, default=15)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--db-name", default="palate_servers")
    p.add_argument("--data-dir", default="/tmp/palate-servers")
    p.add_argument("--broker", default="redis://127.0.0.1:6379/10")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for Palate's server (repeatable): a settings trial",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--chain",
        action="store_true",
        help="one request per rating in both runs of a round (the floor and "
        "Palate): ratings with ?next=1 (assignment_load.py --chain)",
    )
    args = p.parse_args(argv)
    args.servers = args.servers.split(",")
    unknown = set(args.servers) - set(palate.SERVERS)
    if unknown:
        p.error(f"unknown servers {sorted(unknown)}; known: {palate.SERVERS}")
    for item in args.env:
        if "=" not in item:
            p.error(f"--env wants KEY=VALUE, got {item!r}")
    return args


def build(args) -> tuple[argparse.Namespace, dict, int, list[str]]:
    """The study of ``assignment_load.py`` in a database of its own."""
    pargs = palate.parse_args(
        [
            "--images", str(args.images), "--annotators", str(args.annotators),
            "--raters", str(args.raters), "--clients", str(args.clients),
            "--workers", str(args.workers), "--threads", str(args.threads),
            "--db-name", args.db_name, "--pg-url", args.pg_url,
            "--data-dir", str(Path(args.data_dir) / "palate"),
            "--broker", args.broker, "--seed", str(args.seed),
        ]
    )  # fmt: skip
    env = palate.server_env(pargs)
    os.environ.update(env)
    env.update(item.split("=", 1) for item in args.env)
    sys.path.insert(0, str(palate.ROOT))
    subprocess.run(["rm", "-rf", args.data_dir], check=True)
    (Path(args.data_dir) / "logs").mkdir(parents=True)
    palate.recreate_database(pargs)
    subprocess.run(
        [str(palate.VENV_BIN / "python"), "manage.py", "migrate", "--no-input", "-v0"],
        cwd=palate.ROOT,
        env=env,
        check=True,
    )
    import django

    django.setup()
    study_id, tokens = palate.build_study(pargs)
    from django.db import connection

    connection.close()
    return pargs, env, study_id, tokens


def one_round(args, pargs, env, server: str, study_id: int, tokens, n: int) -> dict:
    floor = hot_floor.http_floor_round(
        argparse.Namespace(
            server=server,
            seconds=args.floor_seconds,
            clients=args.clients,
            tokens=args.annotators,
            workers=args.workers,
            threads=args.threads,
            chain=args.chain,
        )
    )
    pargs.server = server
    port = palate.free_port()
    log = Path(args.data_dir) / "logs" / f"{n:02d}-{server}.log"
    proc = palate.start_server(pargs, env, port, log)
    try:
        palate.wait_ready(port, tokens[0], proc, name=server)
        run = peer.run_round(
            args, "palate", port, study_id, tokens, proc, args.db_name, log
        )
    finally:
        palate.stop_server(proc)
    peer.palate_reset(study_id)
    run["server"] = server
    run["floor"] = floor
    run["app_ms"] = run["web_ms"] + run["pg_ms"] - floor["web_ms"]
    return run


def _row(r: dict) -> str:
    f = r["floor"]
    return (
        f"{r['server']:<9} floor {f['rate']:6.0f}/s web {f['web_ms']:.2f} ms "
        f"clients {f['client_ms']:.2f} ms | Palate {r['rate']:6.1f}/s claim "
        f"p50/p95 {r['claim_p50']:.1f}/{r['claim_p95']:.1f} submit "
        f"{r['submit_p50']:.1f}/{r['submit_p95']:.1f} ms; CPU/rating web "
        f"{r['web_ms']:.2f} + pg {r['pg_ms']:.2f} + clients {r['client_ms']:.2f} ms;"
        f" application {r['app_ms']:.2f} ms | load {f['load'][0]:.1f}->"
        f"{r['load'][1]:.1f}"
        + (f" | {len(r['errors'])} errors: {r['errors'][0]}" if r["errors"] else "")
    )


def summary(results: list[dict], servers: list[str]) -> None:
    print("medians per server:")
    for server in servers:
        rs = [r for r in results if r["server"] == server]

        def med(get, rs=rs):
            return statistics.median(get(r) for r in rs)

        floor = med(lambda r: r["floor"]["rate"])
        print(
            f"  {server:<9} {len(rs)} rounds: floor {floor:.0f}/s at "
            f"{med(lambda r: r['floor']['web_ms']):.2f} ms web; Palate "
            f"{med(lambda r: r['rate']):.1f} ratings/s, claim p95 "
            f"{med(lambda r: r['claim_p95']):.1f} ms, submit p95 "
            f"{med(lambda r: r['submit_p95']):.1f} ms, CPU/rating web "
            f"{med(lambda r: r['web_ms']):.2f} + pg {med(lambda r: r['pg_ms']):.2f}"
            f" ms, application {med(lambda r: r['app_ms']):.2f} ms"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    print(
        f"servers {args.servers}, {args.rounds} rounds; {args.workers} workers x "
        f"{args.threads} threads, {args.clients} clients; study {args.images} "
        f"images x {args.raters}, {args.annotators} annotators; "
        f"{'one rate+next request' if args.chain else 'a claim and a rating'} per "
        "rating; extra env "
        f"{args.env or 'none'}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    pargs, env, study_id, tokens = build(args)
    results = []
    try:
        for r in range(args.rounds):
            order = args.servers[r % len(args.servers) :]
            order += args.servers[: r % len(args.servers)]
            for server in order:
                results.append(
                    one_round(args, pargs, env, server, study_id, tokens, len(results))
                )
                print(f"  round {r + 1}: {_row(results[-1])}", flush=True)
        summary(results, args.servers)
    finally:
        from django.db import connections

        connections.close_all()
        palate.drop_database(pargs)
    return 1 if any(r["errors"] or r["floor"]["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
