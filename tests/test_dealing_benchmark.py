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


def test_scale_scenario_keeps_diverse_tastes_and_moves_each_annotators_centre():
    """``scale``: the same planted tastes and noise as ``diverse`` for a seed,
    but each annotator's scores sit around their own centre."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from benchmarks.dealing import World, parse_args

    args = parse_args(["--tiny"])
    diverse, scale = World(args, 3, "diverse"), World(args, 3, "scale")
    assert np.array_equal(diverse.u, scale.u)
    assert np.array_equal(diverse.noise, scale.noise)
    assert not diverse.centre.any() and (diverse.spread == 1).all()
    n_img, n_ann = scale.u.shape
    mean = [np.mean([scale.score(i, a) for i in range(n_img)]) for a in range(n_ann)]
    assert np.corrcoef(scale.centre, mean)[0, 1] > 0.9
    assert all(1 <= scale.score(i, a) <= 7 for i in range(n_img) for a in range(n_ann))


@pytest.mark.slow
def test_a_seed_fixes_the_run(tmp_path):
    """The same seed twice gives the same curves: images and annotators are named
    from the world (never the policy, a database id or a random public id), and
    the images' dealing order comes from the seed, so every policy's run of a
    world trains on the same splits and a rerun repeats."""
    import json

    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = []
    for n in (1, 2):
        out = tmp_path / f"run{n}.json"
        done = subprocess.run(
            [
                sys.executable,
                "benchmarks/dealing.py",
                "--tiny",
                "--scenarios",
                "diverse",
                "--json",
                str(out),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs.append(json.loads(out.read_text())["runs"])
    assert [(r["policy"], r["curve"], r["given"]) for r in runs[0]] == [
        (r["policy"], r["curve"], r["given"]) for r in runs[1]
    ]
