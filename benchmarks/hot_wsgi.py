"""CPU per request of the two hot API endpoints inside Django's WSGI application.

``assignment_load.py`` measures the whole system (a web server, PostgreSQL,
clients); this isolates what the application costs per claim and per submit: it
calls ``config.wsgi.application`` (the hot lane of ``core.hot_lane``;
``--no-lane``: Django's own handler, every middleware) directly with a WSGI
environ (production settings, no HTTP server), one claim and one submit per
turn, and prints CPU per request (``time.thread_time``, which excludes time
waiting for PostgreSQL), wall time, queries per request and, with ``--profile
N``, cProfile's N costliest functions by CPU time. ``--bare`` also times the
same requests against the views alone (no middleware).

One client, one request at a time, so the machine's other work disturbs the
figures little. It also reads the CPU of the PostgreSQL backend serving this
process's connection (``/proc/<pg_backend_pid()>/stat``, utime + stime; the
server must run on this machine) before and after the timed turns: web CPU +
backend CPU per rating is the application's CPU without a server or a client.
``--compare R`` alternates R rounds of "after" (the hot lane, the engine's live
SQL) and "before" (every middleware, the function of ``--before-sql FILE``).
``--statements N`` then runs N turns timing the functions alone
(``pg_stat_user_functions``) and N under ``auto_explain`` (nested statements,
triggers, ``log_analyze`` without per-node timing: needs a superuser), printing
each statement inside the engine's functions with its mean duration per turn.

``--chain``: one request per rating (the rating with ``?next=1``, the next
item taken from its answer); ``--compare-chain R``: R rounds alternating that
and two requests per rating (ABBA), both through the hot lane.
``--compare-sql R`` (with ``--before-sql``): R rounds alternating the live
SQL and the older copies, both through the hot lane (with ``--chain``, one
request per rating): only the SQL differs. ``--interleave N`` compares the
same finer: the older copies installed beside the live ones under other
names, the two alternating every 20 ratings (see ``interleave``).

Needs PostgreSQL; builds its own database (``--db-name``, dropped at the end):

    .venv/bin/python benchmarks/hot_wsgi.py --requests 1000 [--profile 40]
    .venv/bin/python benchmarks/hot_wsgi.py --requests 300 --compare 8 \
        --before-sql annotation/migrations/sql/0025/palate_claim.sql --statements 300
    .venv/bin/python benchmarks/hot_wsgi.py --requests 1000 --compare-chain 4
    .venv/bin/python benchmarks/hot_wsgi.py --requests 1000 --chain --compare-sql 8 \
        --before-sql /tmp/older-sql-folder
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


def environ(method: str, path: str, token: str, body: bytes, query: str = "") -> dict:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": query,
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


# --chain: the item each annotator rates next, from the last ?next=1 answer.
HELD: dict[str, str] = {}


def run(app, study_id, tokens, n, profiler=None, label="wsgi", chain=False):
    """n ratings, each a claim and a submit, or (``chain``) one ``?next=1``
    rating whose answer holds the next item (a claim only for an annotator
    holding none yet)."""
    from django.db import connection

    counts: list[int] = []

    def count(execute, sql, params, many, context):
        counts[-1] += 1
        return execute(sql, params, many, context)

    names = ("claim", "rate+next") if chain else ("claim", "submit")
    stats = {k: ([], [], []) for k in names}
    claim_path = f"/api/v1/studies/{study_id}/assignments/next/"
    if not chain:
        HELD.clear()  # each claim returns the lease held, rated below

    def one(name, path, token, body, expect, query="") -> bytes:
        env = environ("POST", path, token, body, query)
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
            assignment = HELD.pop(token, None)
            if assignment is None:
                data = one("claim", claim_path, token, b"", "200")
                assignment = json.loads(data)["id"]
            path = f"/api/v1/assignments/{assignment}/rating/"
            if not chain:
                one("submit", path, token, b'{"score": 4}', "201")
                continue
            data = one("rate+next", path, token, b'{"score": 4}', "201", "next=1")
            following = json.loads(data)["next"]
            if following is not None:
                HELD[token] = following["id"]
    return stats


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the PostgreSQL backend ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def backend_run_ms(pid: int) -> float:
    """Milliseconds the process ``pid`` has run on a CPU, from the scheduler's
    own clock (``/proc/<pid>/schedstat``, nanoseconds; ``backend_cpu``'s ticks
    are 10 ms, too coarse to compare short stretches)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


def backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def statements(app, study_id, tokens, n: int, chain: bool = False) -> None:
    """Each statement the engine's functions run, by mean duration per turn
    (``auto_explain``'s nested statements, as NOTICEs to this connection)."""
    import re
    from collections import defaultdict

    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    with connection.cursor() as cursor:
        cursor.execute("SET track_functions = 'pl'")
        cursor.execute("SELECT pg_stat_reset()")
    pid = backend_pid()
    pg0 = backend_cpu(pid)
    run(app, study_id, tokens, n, label="functions", chain=chain)
    pg1 = backend_cpu(pid)
    function_times("functions timed alone (no auto_explain)")
    print(f"  backend CPU per turn {(pg1 - pg0) * 1000 / n:.3f} ms")
    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_analyze = on",
            "auto_explain.log_timing = off",
            "auto_explain.log_triggers = on",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_level = notice",
            "track_functions = 'pl'",
            "client_min_messages = notice",
        ):
            cursor.execute(f"SET {setting}")
        cursor.execute("SELECT pg_stat_reset()")
    seen: dict[str, list[float]] = defaultdict(list)
    triggers: dict[str, list[float]] = defaultdict(list)
    duration = re.compile(r"duration: ([0-9.]+) ms")
    trigger = re.compile(r"Trigger (\S+)(?: on \S+)?: (?:time=([0-9.]+) )?calls=(\d+)")

    def collect(notice: str) -> None:
        m = duration.search(notice)
        if m is None:
            return
        text = notice.split("Query Text:", 1)[-1].split("\n")
        query = " ".join(text[0].split())[:110]
        # The request's own statement, whatever its arguments.
        query = re.sub(r"^(SELECT \* FROM palate_\w+)\(.*", r"\1(...)", query)
        seen[query].append(float(m.group(1)))
        for t in trigger.finditer(notice):
            if t.group(2):
                triggers[t.group(1)].append(float(t.group(2)))

    raw.notices = []
    for turn in range(n):
        rotated = tokens[turn:] + tokens[:turn]
        run(app, study_id, rotated, 1, label="explain", chain=chain)
        for notice in raw.notices:
            collect(notice)
        raw.notices.clear()
    print(f"statements inside the functions, {n} turns (ms per turn, auto_explain):")
    for query, times in sorted(seen.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {sum(times) / n:7.3f} ({len(times) / n:4.2f}x)  {query}")
    for name, times in triggers.items():
        print(f"  trigger {name}: {sum(times) / n:.3f} ms per turn")
    function_times("under auto_explain")


def function_times(label: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute(
            "SELECT funcname, calls, total_time, self_time FROM"
            " pg_stat_user_functions ORDER BY total_time DESC"
        )
        rows = cursor.fetchall()
        cursor.execute("SELECT pg_stat_reset()")
    print(f"pg_stat_user_functions, {label} (wall ms per call: total, self):")
    for name, calls, total, own in rows:
        print(f"  {name:<24} {calls:6d} calls  {total / calls:.3f}  {own / calls:.3f}")


def first_claims(claims: tuple[list, list, list], people: int) -> None:
    """The warmup's first claim per annotator, apart: a participant's first
    claim is not in the measured turns, and it once left the one statement for
    the Python engine (about 20 ms of CPU; migration annotation 0031)."""
    cpu, wall, queries = (column[:people] for column in claims)
    if cpu:
        print("first claims (the warmup's, one per annotator, not measured below):")
        print(line("first", cpu, wall, queries))


def measure(app, study_id, tokens, n, profiler, chain=False) -> tuple[float, float]:
    """n turns through ``app``: (web CPU, PostgreSQL backend CPU) per rating."""
    pid = backend_pid()
    pg0, w0 = backend_cpu(pid), time.perf_counter()
    stats = run(app, study_id, tokens, n, profiler, chain=chain)
    pg1, w1 = backend_cpu(pid), time.perf_counter()
    if backend_pid() != pid:
        raise SystemExit("the connection changed backend during the run")
    print(
        "through config.wsgi.application (hot lane):"
        if hasattr(app, "in_lane")
        else "through Django's WSGIHandler (every middleware):"
    )
    for name, (cpu, wall, queries) in stats.items():
        if cpu:
            print(line(name, cpu, wall, queries))
    # Every request's CPU over the ratings (chain: the few claims included).
    web = sum(sum(cpu) for cpu, _, _ in stats.values()) / n
    pg = (pg1 - pg0) * 1000 / n
    per = "one rate+next request" if chain else "claim + submit"
    print(
        f"per rating ({per}): web CPU {web:.3f} ms (mean) + PostgreSQL"
        f" backend CPU {pg:.3f} ms = {web + pg:.3f} ms; wall"
        f" {(w1 - w0) * 1000 / n:.3f} ms"
        + (" (profiled: web CPU inflated)" if profiler else "")
    )
    return web, pg


LIVE_SQL = ROOT / "annotation" / "engine" / "sql"


def install_sql(where: Path) -> None:
    """The .sql files of a folder, or one file (a frozen copy of one function:
    an older copy of a helper may not fit today's tables). Each function is
    dropped first whatever its arguments: a copy from before an argument was
    added would otherwise be installed beside the newer one (an overload)."""
    import re

    from django.db import connection

    files = sorted(where.glob("*.sql")) if where.is_dir() else [where]
    with connection.cursor() as cursor:
        for path in files:
            text = path.read_text(encoding="utf-8")
            name = re.search(r"FUNCTION (?:public\.)?(\w+)\(", text)
            if name and "RETURNS trigger" not in text:
                cursor.execute(
                    "SELECT oid::regprocedure::text FROM pg_proc WHERE proname = %s",
                    [name.group(1)],
                )
                for (signature,) in cursor.fetchall():
                    cursor.execute(f"DROP FUNCTION {signature}")
            cursor.execute(text)


def compare(lane, full, study_id, tokens, args) -> None:
    """Rounds alternating after and before, ABBA (neither always first), each
    after a few unmeasured turns (the functions' plans made again).
    ``--compare-sql``: both arms through the hot lane (``--chain``: one
    request per rating), only the SQL differs."""
    rounds = args.compare or args.compare_sql
    before_app = lane if args.compare_sql else full
    arms = {
        "after": (lane, LIVE_SQL),
        "before": (before_app, args.before_sql or LIVE_SQL),
    }
    totals = {name: [] for name in arms}
    for r in range(rounds):
        names = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for name in names:
            app, sql = arms[name]
            install_sql(sql)
            warm = len(tokens) if args.chain else 5
            run(app, study_id, tokens, warm, label=name, chain=args.chain)
            print(f"{name} (SQL from {sql}), load {os.getloadavg()[0]:.2f}:")
            got = measure(app, study_id, tokens, args.requests, None, args.chain)
            totals[name].append(got)
    summary(totals)
    install_sql(LIVE_SQL)


def summary(totals: dict[str, list[tuple[float, float]]]) -> None:
    """Each arm's medians, then the rounds paired (the two arms of one round
    ran back to back): the median difference and how many rounds favour the
    first arm, for web, PostgreSQL and the total."""
    for name, runs in totals.items():
        web = statistics.median(w for w, _ in runs)
        pg = statistics.median(p for _, p in runs)
        print(
            f"{name}: CPU per rating, median of {len(runs)} rounds: web {web:.3f} +"
            f" PostgreSQL {pg:.3f} = {web + pg:.3f} ms"
            f" (each round: {', '.join(f'{w + p:.2f}' for w, p in runs)})"
        )
    (a, first), (b, second) = totals.items()
    pairs = list(zip(first, second, strict=True))
    for part, pick in (
        ("web", lambda x: x[0]),
        ("PostgreSQL", lambda x: x[1]),
        ("total", lambda x: x[0] + x[1]),
    ):
        diff = [pick(x) - pick(y) for x, y in pairs]
        mid = statistics.median(diff)
        print(
            f"  {part}, {a} - {b} paired by round: median {mid:+.3f} ms,"
            f" {a} lower in {sum(d < 0 for d in diff)} of {len(diff)}"
        )


def compare_chain(app, study_id, tokens, args) -> None:
    """Rounds alternating one request per rating (``?next=1``) and two, ABBA,
    each after one unmeasured turn per annotator (the chain's first claims)."""
    arms = {"chain": True, "two requests": False}
    totals = {name: [] for name in arms}
    for r in range(args.compare_chain):
        names = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for name in names:
            run(app, study_id, tokens, len(tokens), label=name, chain=arms[name])
            print(f"{name}:")
            got = measure(app, study_id, tokens, args.requests, None, arms[name])
            totals[name].append(got)
    summary(totals)


def install_renamed(where: Path, suffix: str) -> dict[str, str]:
    """The functions of ``where`` (a folder of .sql files) under new names
    (``<name><suffix>``, in their definitions and in the calls between them),
    beside the live ones: {old name: new name}."""
    import re

    from django.db import connection

    texts = [path.read_text(encoding="utf-8") for path in sorted(where.glob("*.sql"))]
    names = {
        m.group(1): m.group(1) + suffix
        for text in texts
        if (m := re.search(r"FUNCTION (?:public\.)?(\w+)\(", text))
    }
    call = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\(")
    with connection.cursor() as cursor:
        for text in texts:
            cursor.execute(call.sub(lambda m: names[m.group(1)] + "(", text))
    return names


def interleave(app, study_id, tokens, args) -> None:
    """``--interleave N``: N ratings with the live SQL and N with the older
    copies of ``--before-sql`` (installed under other names), both with
    ``?next=1`` through the hot lane, alternating every round of one rating
    per annotator (ABBA), so that the machine's changing load falls on both
    alike. Per arm: web CPU (thread time), PostgreSQL backend CPU (the
    scheduler's run time of the backend, ``backend_run_ms``) and the wall time
    inside ``palate_submit_next`` (``pg_stat_user_functions``)."""
    from django.db import connection

    from annotation.engine.services import engine_sql

    names = install_renamed(args.before_sql, "_b")
    live = engine_sql._SUBMIT_NEXT
    arms = {"after": live, "before": live.replace("palate_submit_next(", names[
        "palate_submit_next"] + "(")}  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SET track_functions = 'pl'")
    pid = backend_pid()
    totals = {name: [0.0, 0.0, 0] for name in arms}
    k = len(tokens)
    try:
        run(app, study_id, tokens, 2 * k, label="warm", chain=True)
        for name, sql in arms.items():  # each function compiled and planned
            engine_sql._SUBMIT_NEXT = sql
            run(app, study_id, tokens, 2 * k, label=name, chain=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_reset()")
        for turn in range(2 * args.interleave):
            name = "after" if (turn // k) % 4 in (0, 3) else "before"
            engine_sql._SUBMIT_NEXT = arms[name]
            rotated = tokens[turn % k :] + tokens[: turn % k]
            pg0 = backend_run_ms(pid)
            stats = run(app, study_id, rotated, 1, label=name, chain=True)
            pg1 = backend_run_ms(pid)
            got = totals[name]
            got[0] += sum(sum(cpu) for cpu, _, _ in stats.values())
            got[1] += pg1 - pg0
            got[2] += 1
    finally:
        engine_sql._SUBMIT_NEXT = live
    function_times(f"interleaved, {args.interleave} ratings each")
    for name, (web, pg, n) in totals.items():
        print(
            f"{name}: CPU per rating web {web / n:.3f} + PostgreSQL {pg / n:.3f}"
            f" = {(web + pg) / n:.3f} ms ({n} ratings)"
        )


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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="claims (and submits)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--profile", type=int, default=0, metavar="N")
    p.add_argument(
        "--sort", default="cumulative", help="the profile's order (e.g. tottime)"
    )
    p.add_argument("--bare", action="store_true", help="also time without middleware")
    p.add_argument(
        "--no-lane",
        dest="lane",
        action="store_false",
        help="Django's WSGIHandler (every middleware) instead of config.wsgi's",
    )
    p.add_argument(
        "--compare",
        type=int,
        default=0,
        metavar="R",
        help="R rounds alternating after (the hot lane, the engine's live SQL) and"
        " before (every middleware, --before-sql)",
    )
    p.add_argument(
        "--compare-sql",
        type=int,
        default=0,
        metavar="R",
        help="R rounds alternating the live SQL and --before-sql, both through the"
        " hot lane (with --chain: one request per rating)",
    )
    p.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="N",
        help="N ratings each with the live SQL and with --before-sql's (renamed),"
        " alternating every round of one rating per annotator (ABBA)",
    )
    p.add_argument(
        "--before-sql",
        type=Path,
        metavar="PATH",
        help="the 'before' rounds run this .sql file (or a folder's), e.g."
        " annotation/migrations/sql/0025/palate_claim.sql; default: the live ones",
    )
    p.add_argument(
        "--chain",
        action="store_true",
        help="one request per rating: ratings with ?next=1, the next item taken "
        "from the answer (assignment_load.py --chain)",
    )
    p.add_argument(
        "--compare-chain",
        type=int,
        default=0,
        metavar="R",
        help="R rounds alternating --chain and two requests per rating (ABBA)",
    )
    p.add_argument(
        "--statements",
        type=int,
        default=0,
        metavar="N",
        help="N more turns with each inner statement timed (auto_explain)",
    )
    p.add_argument("--db-name", default="palate_hot_wsgi")
    p.add_argument("--keep-db", action="store_true", help="do not drop it at the end")
    p.add_argument("--data-dir", default="/tmp/palate-hot-wsgi")
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    n = (
        args.requests
        * max(1, 2 * args.compare, 2 * args.compare_chain, 2 * args.compare_sql)
        + args.warmup
        + 2 * args.statements
        + 10 * args.compare
        + 40 * (args.compare_chain + args.compare_sql)
        + 2 * args.interleave
    )
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
    # One backend for the whole run: its CPU is read from /proc (production's
    # 60 s would reconnect, and the old backend's CPU would be lost).
    env["DATABASE_CONN_MAX_AGE"] = "86400"
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
        from django.core.handlers.wsgi import WSGIHandler

        from core.hot_lane import get_wsgi_application

        study_id, tokens = assignment_load.build_study(load_args)
        # config.wsgi's application, or Django's own handler (every middleware
        # for every request: the chain before the hot lane).
        lane, full = get_wsgi_application(), WSGIHandler()
        app = lane if args.lane else full
        warm = run(app, study_id, tokens, args.warmup, chain=args.chain)
        first_claims(warm["claim"], len(tokens))
        print(f"load average {os.getloadavg()[0]:.2f}; {args.requests} turns")
        # CPU time, not wall time: waits for PostgreSQL and for the GIL drop out.
        profiler = cProfile.Profile(time.thread_time) if args.profile else None
        if args.interleave:
            interleave(lane, study_id, tokens, args)
        elif args.compare or args.compare_sql:
            compare(lane, full, study_id, tokens, args)
        elif args.compare_chain:
            compare_chain(app, study_id, tokens, args)
        else:
            measure(app, study_id, tokens, args.requests, profiler, args.chain)
        if args.bare:
            stats = run(
                bare_app(), study_id, tokens, args.requests, label="bare",
                chain=args.chain,
            )  # fmt: skip
            print("views alone (no middleware):")
            for name, (cpu, wall, queries) in stats.items():
                if cpu:
                    print(line(name, cpu, wall, queries))
        if args.statements:
            statements(app, study_id, tokens, args.statements, args.chain)
        print(f"load average {os.getloadavg()[0]:.2f}")
        if profiler:
            pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.profile)
    finally:
        from django.db import connection

        connection.close()
        if not args.keep_db:
            assignment_load.drop_database(load_args)


if __name__ == "__main__":
    main()
