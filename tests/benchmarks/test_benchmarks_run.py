"""Every script in ``benchmarks/`` runs, at a tiny size, so none can rot (issue 29).

Each script is run as a subprocess with the arguments below (the smallest study,
the fewest seconds), on the real PostgreSQL and Redis where it needs them, and
must exit 0 and print its closing line. Nothing here is timed: the figures are
the scripts' business (``benchmarks/RESULTS.md``). Where a script needs something
absent on this machine (a GPU, Label Studio) it runs its CPU path or its
set-up, and the entry says so.

A new ``benchmarks/*.py`` must get an entry in ``TINY`` (or in ``HELPERS`` when
it is a module other scripts import, or in ``ELSEWHERE`` when another test runs
it small): ``test_every_benchmark_has_a_tiny_run`` fails otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

from tests.celery_worker import BROKER

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Tiny:
    args: tuple[str, ...]
    expect: str  # a line the script prints only when it ran to its end
    postgres: bool = True
    redis: bool = False
    timeout: int = 600  # a safety net for a loaded machine, not a time limit
    # Exit codes that count as "ran to its end" (with ``expect`` printed): a
    # script that exits 1 on a missed quality target reports, it has not rotted.
    ok_codes: tuple[int, ...] = (0,)
    env: dict[str, str] = field(default_factory=dict)
    script: str = ""  # the script, when the entry is a second run of one


# {db}: a database name of this run; {pg}: the server's URL (no database);
# {tmp}: a scratch folder; {broker}: the test Redis database.
TINY: dict[str, Tiny] = {
    "assignment_load.py": Tiny(
        ("--images", "12", "--annotators", "4", "--raters", "2", "--clients", "2")
        + ("--max-seconds", "60", "--pg-url", "{pg}", "--db-name", "{db}")
        + ("--data-dir", "{tmp}", "--broker", "{broker}", "--chain"),
        "verify:     OK",
        redis=True,
    ),
    "servers.py": Tiny(
        ("--servers", "gunicorn,granian,uwsgi", "--rounds", "1", "--images", "12")
        + ("--annotators", "4", "--raters", "2", "--clients", "2")
        + ("--round-seconds", "1", "--floor-seconds", "1", "--pg-url", "{pg}")
        + ("--db-name", "{db}", "--data-dir", "{tmp}", "--broker", "{broker}")
        + ("--chain",),
        "medians per server:",
        redis=True,
    ),
    "hot_floor.py": Tiny(
        ("--seconds", "1", "--clients", "2", "--tokens", "4", "--pg")
        + ("--pg-url", "{pg}"),
        "backend CPU",
        # gunicorn_profile.py rides along: the floor's gunicorn loads it.
        env={"GUNICORN_CMD_ARGS": "-c gunicorn_profile.py"},
    ),
    "hot_wsgi.py": Tiny(
        ("--requests", "6", "--warmup", "2", "--bare", "--profile", "3")
        + ("--statements", "2")
        + ("--pg-url", "{pg}", "--db-name", "{db}", "--data-dir", "{tmp}"),
        "backend CPU per turn",
    ),
    # One request per rating (?next=1), and rounds against two requests.
    "hot_wsgi.py --chain": Tiny(
        ("--requests", "6", "--warmup", "2", "--chain", "--compare-chain", "2")
        + ("--bare", "--statements", "2")
        + ("--pg-url", "{pg}", "--db-name", "{db}", "--data-dir", "{tmp}"),
        "backend CPU per turn",
        script="hot_wsgi.py",
    ),
    # Older SQL against the live one: in rounds, and interleaved (renamed).
    "hot_wsgi.py --compare-sql": Tiny(
        ("--requests", "6", "--warmup", "2", "--chain", "--compare-sql", "2")
        + ("--before-sql", "annotation/migrations/sql/0029")
        + ("--pg-url", "{pg}", "--db-name", "{db}", "--data-dir", "{tmp}"),
        "paired by round",
        script="hot_wsgi.py",
    ),
    "hot_wsgi.py --interleave": Tiny(
        ("--requests", "2", "--warmup", "2", "--interleave", "45")
        + ("--before-sql", "annotation/migrations/sql/0029")
        + ("--pg-url", "{pg}", "--db-name", "{db}", "--data-dir", "{tmp}"),
        "palate_submit_next_b",
        script="hot_wsgi.py",
    ),
    # Label Studio is not installed here: the script's own arguments and its
    # Palate side (study, server, a round, the reset between rounds) run; the
    # Label Studio rounds need ``--ls-venv`` with label-studio in it.
    "labelstudio_peer.py": Tiny(
        ("--palate-only", "--pairs", "2", "--round-seconds", "1", "--images", "12")
        + ("--annotators", "4", "--raters", "2", "--clients", "2", "--pg-url", "{pg}")
        + ("--palate-db", "{db}", "--data-dir", "{tmp}"),
        "Palate alone",
    ),
    "soak.py": Tiny(
        # Annotators to spare: the chaos excludes some, and their slots reopen.
        ("--images", "8", "--annotators", "20", "--quota", "8", "--raters", "2")
        + ("--clients", "3", "--lease-seconds", "5", "--max-seconds", "240")
        + ("--pg-url", "{pg}")
        + ("--db-name", "{db}", "--data-dir", "{tmp}", "--broker", "{broker}"),
        "verify:",
        redis=True,
    ),
    "dashboard.py": Tiny(("--tiny",), "every page"),
    "export.py": Tiny(
        ("--images", "8", "--ratings-per-image", "2", "--annotators", "4")
        + ("--pool", "2", "--variants", "parquet-embed", "csv-path"),
        "load average after",
    ),
    "generation.py": Tiny(
        ("--images", "4", "--per-prompt", "2", "--size", "32", "--workers", "1")
        + ("--render-n", "2", "--pg-url", "{pg}/postgres", "--db-name", "{db}")
        + ("--redis-db", "{redis_db}", "--warmup", "0", "--max-seconds", "90"),
        "invariants OK",
        redis=True,
    ),
    "qc_bots.py": Tiny(("--seeds", "1", "--bots", "fast"), "fast      api"),
    "rating_roundtrip.py": Tiny(
        ("--annotators", "1", "--per", "3", "--warmup", "1"), "p95"
    ),
    "worker_kill.py": Tiny(
        ("--fast", "--cases", "export-worker", "--broker", "{broker}"),
        "export-worker",
        redis=True,
    ),
    "steering.py": Tiny(
        ("--train-images", "20", "--annotators", "4", "--raters", "3")
        + ("--optimise", "1", "--prompts", "1", "--rounds", "1", "--per-round", "2")
        + ("--max-images", "3", "--probe", "2"),
        # Its exit code is the model-quality verdict, a coin toss at this size.
        "targets (",
        ok_codes=(0, 1),
    ),
    "train_speed.py": Tiny(
        # 80 images at least: the newcomer timings take images 40-80.
        ("--images", "100", "--ratings", "600", "--annotators", "8", "--dim", "16")
        + ("--only", "train"),
        "training run",
    ),
    # No CUDA here: the script's CPU dry run (its own --device cpu), one model.
    "gpu_check.py": Tiny(
        ("--device", "cpu", "--images", "2", "--size", "32", "--batch", "2")
        + ("--models", "palate-tiny-vit"),
        '"ok": true',
        postgres=False,
    ),
    "pixelstats_probe.py": Tiny(
        ("--images", "12", "--size", "32"), "pixelstats:v2", postgres=False
    ),
    # Two variants: the whole benchmark's pooled row (issue 26's target) too.
    "taste_benchmark.py": Tiny(
        ("--variants", "linear", "domain", "--backbones", "synthetic", "--seeds", "1")
        + ("--images", "60", "--annotators", "20", "--cache", "{tmp}"),
        "| **all variants, pooled** | synthetic | 2 (variant × seed) |",
        postgres=False,
    ),
    "crowd_by_split.py": Tiny(
        ("--variant", "linear", "--backbone", "synthetic", "--seeds", "1")
        + ("--images", "60", "--annotators", "20", "--cache", "{tmp}"),
        "crowd_by_split: 1 seed(s) of linear",
        postgres=False,
    ),
    "expected_gap.py": Tiny(
        ("--variants", "linear", "--backbone", "synthetic", "--seeds", "1")
        + ("--images", "60", "--annotators", "20", "--cache", "{tmp}"),
        "runs below their best baseline by > 0.01: on the ratings",
        postgres=False,
    ),
    # The low-rank agreement prior's paired arm (issue 26 experiment).
    "taste_benchmark.py --paired lowrank": Tiny(
        ("--variants", "linear", "--backbones", "synthetic", "--seeds", "1")
        + ("--images", "60", "--annotators", "20", "--cache", "{tmp}")
        + ("--paired", "lowrank", "--lowrank", "2", "5", "1", "0", "1"),
        "1 runs,",
        postgres=False,
        script="taste_benchmark.py",
    ),
    # Scripts of other branches, given by their authors (the exit code is the
    # check; each skips until its script is merged).
    "portrait.py": Tiny(
        ("--images", "200", "--ratings", "20", "--annotators", "15", "--dim", "16")
        + ("--repeat", "2"),
        "",
    ),
    "import_memory.py": Tiny(("--tiny",), "load average after"),
    "scale.py": Tiny(
        ("--tiny", "--out", "{tmp}/scale.jsonl", "--plot", "{tmp}/scale.svg"), ""
    ),
}

# Scripts whose tiny run another test already makes (not run twice).
ELSEWHERE = {
    "dealing.py": "tests/test_dealing_benchmark.py runs it with --tiny",
    "compare_raw.py": "tests/benchmarks/test_compare_raw.py (on a tiny --raw)",
}

# Modules the scripts import, and the run that exercises each.
HELPERS = {
    "_common.py": "dashboard.py, export.py, steering.py, train_speed.py, ...",
    "oracle_features.py": "pixelstats_probe.py",
    "gunicorn_profile.py": "hot_floor.py (GUNICORN_CMD_ARGS)",
    "scale_fill.py": "scale.py",
    "scale_train.py": "scale.py",
    "scale_plot.py": "scale.py",
}


def test_every_benchmark_has_a_tiny_run():
    scripts = {p.name for p in BENCH.glob("*.py")}
    missing = scripts - TINY.keys() - HELPERS.keys() - ELSEWHERE.keys()
    assert not missing, (
        f"benchmarks without a tiny run in {Path(__file__).name}: {sorted(missing)}"
    )


def _pg_base() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"


@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_runs_tiny(name, tmp_path, request):
    tiny = TINY[name]
    name = tiny.script or name
    if not (BENCH / name).exists():
        pytest.skip(f"benchmarks/{name} is not on this branch yet")
    if tiny.postgres and connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL (make test does)")
    if tiny.redis:
        request.getfixturevalue("redis_broker")
    pg = _pg_base() if tiny.postgres else ""
    db = f"palate_tiny_{Path(name).stem}_{os.getpid()}"
    values = {
        "pg": pg,
        "db": db,
        "tmp": str(tmp_path / "data"),
        "broker": BROKER,
        "redis_db": BROKER.rsplit("/", 1)[-1],
    }
    args = [a.format(**values) for a in tiny.args]
    env = dict(os.environ, OMP_NUM_THREADS="1", **tiny.env)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if tiny.postgres:
        # Scripts that make a throw-away database next to DATABASE_URL's.
        env["DATABASE_URL"] = f"{pg}/{db}"
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        cwd=BENCH if tiny.env.get("GUNICORN_CMD_ARGS") else ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=tiny.timeout,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode in tiny.ok_codes, out[-4000:]
    if proc.returncode:  # an accepted verdict, not a crash
        assert "Traceback (most recent call last)" not in out, out[-4000:]
    assert tiny.expect in out, out[-4000:]
