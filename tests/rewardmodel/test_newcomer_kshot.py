"""Newcomers' τ² scored on simulated newcomers (``rewardmodel.newcomer_tau``,
issue 26): val_seen annotators adapted from k of their train ratings, as a
newcomer would be. The rule keeps the selected τ² unless it does worse than no
adaptation or another wins by two paired standard errors; the simulation
learns with k where people differ; nobody is scored with taste directions
learned from their own head; and at most ``MAX_SIMULATED`` people are
simulated.
"""

from __future__ import annotations

import numpy as np
import pytest

from annotation import splits
from rewardmodel import newcomer_tau as NT
from rewardmodel import selection as Sel
from rewardmodel import training as TR
from rewardmodel.evaluation import CODES, model_prior, scorer
from tests.rewardmodel.test_learning import planted

GRID = np.array([0.0, 0.1, 1.0])


def _acc(gain: float, spread: float, people: int = 40) -> np.ndarray:
    """(people, ks 2, T 3): τ² 1 beats τ² 0.1 by ``gain`` on average, each
    person's gain spread by ``spread`` (seeded)."""
    rng = np.random.default_rng(0)
    acc = np.full((people, 2, 3), 0.60)
    acc[:, :, 2] += gain + rng.normal(0, spread, size=(people, 1))
    acc[:, :, 0] -= 0.01
    return acc


def test_a_clear_win_replaces_the_selected_tau2():
    tau2, info = NT.pick(GRID, _acc(0.02, 0.01), current=0.1, z=2.0)
    assert tau2 == 1.0
    assert info["gain"] == pytest.approx(0.02, abs=0.005) and info["people"] == 40


def test_a_win_inside_two_standard_errors_keeps_it():
    tau2, info = NT.pick(GRID, _acc(0.004, 0.03), current=0.1, z=2.0)
    assert info["scores"]["1"] > info["scores"]["0.1"]  # the best on average …
    assert tau2 == 0.1  # … but not by enough


def test_a_tau2_worse_than_no_adaptation_gives_way_to_the_best():
    """As around a base (``tau2_around``): below τ² = 0 the selected τ² is
    replaced by the best, though that best wins by less than two SE."""
    spread = np.random.default_rng(1).normal(0, 0.03, size=(40, 1))
    acc = np.empty((40, 2, 3))
    acc[:, :, 0] = 0.600  # no adaptation
    acc[:, :, 1] = 0.602  # τ² 0.1, the best
    acc[:, :, 2] = 0.598 + spread - spread.mean()  # τ² 1, the selected one
    tau2, info = NT.pick(GRID, acc, current=1.0, z=2.0)
    assert info["gain"] < 2 * info["se"]
    assert tau2 == 0.1
    acc[:, :, 2] += 0.003  # now 0.601: above no adaptation, kept
    assert NT.pick(GRID, acc, current=1.0, z=2.0)[0] == 1.0


def test_people_not_scored_are_left_out_and_too_few_keep_it():
    acc = _acc(0.02, 0.01, people=3)
    acc[1:, 0, 0] = np.nan
    tau2, info = NT.pick(GRID, acc, current=0.1, z=2.0)
    assert (tau2, info["people"]) == (0.1, 1)
    with pytest.raises(ValueError, match="not on the grid"):
        NT.pick(GRID, _acc(0.02, 0.01), current=0.5, z=2.0)


def _context(snap, emb):
    data = TR._data(snap, emb, {**TR.DEFAULT_CONFIG, "seed": 12})
    return data, Sel.selection_context(data)


def test_the_simulation_learns_with_k_and_tau2_zero_is_the_base():
    snap, emb = planted(12)
    data, ctx = _context(snap, emb)
    base = ctx.base("content", 1.0)
    val_seen = data.part(splits.VAL_SEEN)
    chosen = Sel.Config("content", 0.0, 1.0)
    prior = model_prior(ctx, base, rho=0.0, gamma=0.0, tau2_rel_iso=1.0)
    grid = np.asarray([0.0, 1.0])
    v, sc = scorer(ctx, "val_seen", val_seen)
    acc = NT.simulated_accuracies(
        ctx, v, sc, base=base, prior=prior, chosen=chosen, w0=base, grid=grid
    )
    scored = ~np.isnan(acc).any(axis=(1, 2))
    assert scored.sum() >= 30 and acc.shape[1] == 3  # ks 5, 10, 20
    mean = acc[scored].mean(axis=0)  # (ks, T)
    assert np.ptp(mean[:, 0]) == 0.0  # τ² = 0: the base at every k
    assert mean[0, 1] < mean[1, 1] < mean[2, 1]  # own ratings teach, more teach more
    assert mean[2, 1] > mean[2, 0] + 0.03


def test_nobody_is_scored_with_directions_from_their_own_head():
    """Garbage in the train ratings of half 0's annotators leaves the prior half
    0 is scored with bit for bit, and moves half 1's (which learns from half 0),
    so the comparison can fail."""
    snap, emb = planted(12)
    data, ctx = _context(snap, emb)
    people = np.unique(data.part(splits.VAL_SEEN).ann).tolist()
    w0 = np.zeros(ctx.x.shape[1] + 2)
    chosen = Sel.Config("zero", 0.0, 1.0, 0.8, 1.0)

    def priors(ctx):
        prior = model_prior(ctx, w0, rho=0.0, gamma=0.8, tau2_rel_iso=1.0)
        assert prior.lowrank is not None
        return NT.half_priors(ctx, prior, chosen, w0, people)

    (p0, p1), half = priors(ctx)
    assert 0 < half.sum() < len(people)
    noisy = np.asarray(people)[half == 0]
    hit = np.isin(snap.r_ann, noisy) & (snap.r_split == CODES[splits.TRAIN])
    scores = snap.r_score.copy()
    scores[hit] = np.random.default_rng(1).integers(1, 8, hit.sum())
    snap.r_score = scores
    (q0, q1), half2 = priors(_context(snap, emb)[1])
    assert np.array_equal(half2, half)
    assert np.array_equal(q0.lowrank, p0.lowrank)
    assert not np.allclose(q1.lowrank, p1.lowrank, atol=1e-3)


def test_at_most_max_simulated_people_all_able_and_the_same_each_time():
    """The simulation's cost stays flat as a study grows: a seeded subset of
    the people with enough train ratings, never one without."""
    people = list(range(500))
    train = {a: np.arange(25 if a % 3 else 7) for a in people}  # every 3rd: 7
    chosen = NT._simulated(people, train, 20, seed=4)
    assert chosen.size == NT.MAX_SIMULATED
    assert all(i % 3 for i in chosen) and np.all(np.diff(chosen) > 0)
    assert np.array_equal(chosen, NT._simulated(people, train, 20, seed=4))
    few = {a: train[a] for a in people[:90]}
    assert NT._simulated(people[:90], few, 20, seed=4).tolist() == [
        i for i in range(90) if i % 3
    ]
