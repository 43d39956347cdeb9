"""benchmarks/dealing.py --tiny runs end to end (issue 27): the real engine and
the real model, once per policy, every image at exactly its target (the script
exits 1 otherwise), and it prints the figures RESULTS.md records."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_tiny_dealing_benchmark_runs_to_the_end(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/dealing.py",
            "--tiny",
            "--json",
            str(tmp_path / "out.json"),
            "--png",
            str(tmp_path / "curves.png"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "| diverse | fullest-first |" in out and "| shared | adaptive:2 |" in out
    assert "| NO |" not in out  # every image at its target, in every run
    assert "Per seed (adaptive vs fullest-first" in out
    assert (tmp_path / "out.json").exists()
    assert (tmp_path / "curves.png").exists() or (tmp_path / "curves.svg").exists()
