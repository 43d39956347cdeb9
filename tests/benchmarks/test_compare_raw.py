"""``benchmarks/compare_raw.py``'s tiny run: two ``taste_benchmark.py --raw``
files of the same seeds (the benchmark's own rows against themselves, and its
``--paired`` rows with the per-annotator weights on against off) compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.slow


def _run(*args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return proc.stdout


def test_compare_raw_on_a_tiny_paired_run(tmp_path):
    raw = tmp_path / "raw.json"
    _run(
        str(BENCH / "taste_benchmark.py"),
        *("--variants", "linear", "--backbones", "synthetic", "--seeds", "1"),
        *("--images", "60", "--annotators", "20", "--cache", str(tmp_path / "c")),
        *("--paired", "--raw", str(raw)),
    )
    cells = json.loads(raw.read_text())
    [(cell, data)] = cells.items()
    seen = [
        r
        for r in data["rows"][0]
        if r["split"] == "seen" and r["model"]["pairwise_accuracy"] is not None
    ]
    assert seen, "the tiny run has seen annotators with an accuracy"

    # A file against itself: every value identical, a zero difference.
    out = _run(str(BENCH / "compare_raw.py"), str(raw), str(raw))
    row = next(line for line in out.splitlines() if line.startswith(f"| {cell} |"))
    assert f"| {len(seen)} of {len(seen)} |" in row, out
    assert "+0.0000 [+0.0000, +0.0000]" in row, out
    assert row.rstrip().endswith("| 0 / 1 / 0 |"), out

    # On against off, same fit: both sides read, one row for the cell.
    out = _run(str(BENCH / "compare_raw.py"), f"{raw}:rows", f"{raw}:rows_off")
    assert sum(line.startswith(f"| {cell} |") for line in out.splitlines()) == 1, out

    # Newcomers, a file against itself: every k read, no difference, and the
    # two criteria the same on both sides.
    unseen = [r for r in data["rows"][0] if r["split"] == "unseen"]
    assert {r["k"] for r in unseen} == {0, 5, 10, 20}, "the tiny run has newcomers"
    out = _run(str(BENCH / "compare_raw.py"), "--newcomers", str(raw), str(raw))
    row = next(line for line in out.splitlines() if line.startswith(f"| {cell} |"))
    cols = [c.strip() for c in row[len(f"| {cell} |") :].strip(" |").split("|")]
    assert cols[0] == "0 / 5 / 10 / 20" and cols[1] == cols[2], out
    assert cols[3] == "+0.0000 [+0.0000, +0.0000]", out
    before, after = cols[4].split(" → ")
    assert before == after and before.count("yes") + before.count("no") == 2, out

    # B's newcomers 0.01 better at k > 0: the paired change says so exactly.
    shifted = json.loads(raw.read_text())
    for r in shifted[cell]["rows"][0]:
        if r["split"] == "unseen" and r["k"] and r["model"]["pairwise_accuracy"]:
            r["model"]["pairwise_accuracy"] += 0.01
    better = tmp_path / "better.json"
    better.write_text(json.dumps(shifted))
    out = _run(str(BENCH / "compare_raw.py"), "--newcomers", str(raw), str(better))
    row = next(line for line in out.splitlines() if line.startswith(f"| {cell} |"))
    assert "| +0.0100 [+0.0100, +0.0100] |" in row, out
