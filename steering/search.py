"""The optimisation loop, free of Django: propose, guard, render, score, keep best.

``search`` is shared by the ``optimize_prompt`` service (which renders through a
generation backend and scores with the reward model) and by
``benchmarks/steering.py`` (which also runs an oracle and a population-only
objective through the very same loop). Round 0 evaluates the base prompt. Every
later round asks the proposer for variants of what has been seen, drops those
that break the subject guard (recorded, never rendered), and evaluates the rest;
the kept best is the prompt with the highest score seen so far, so it can only
go up. ``max_images`` counts every image evaluated, the base's included.

The score is the personal score less ``caution`` times its spread (the personal
model's posterior sd on that image, ``rewardmodel.posterior.HeadSpread``): a lower
confidence bound. Picking the best of many candidates by a model's prediction
favours those whose prediction errs upward (the optimiser's curse), and the
search walks furthest where the model knows least; the penalty discounts what
the annotator's own ratings do not support.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .proposers import Evaluated, Proposal, Proposer, ProposerError
from .subject import base_nouns, missing_nouns


@dataclass
class Outcome:
    """What the evaluator returns for one prompt."""

    personal: float  # mean over the prompt's images
    population: float
    images: list = field(default_factory=list)  # handles (image ids in the service)
    image_personal: list[float] = field(default_factory=list)
    image_population: list[float] = field(default_factory=list)
    cost: float = 0.0
    generation_ms: int = 0
    scoring_ms: int = 0
    spread: float = 0.0  # mean over the prompt's images, as personal
    image_spread: list[float] = field(default_factory=list)

    def score(self, caution: float) -> float:
        """What the search maximises: personal − caution × spread."""
        return self.personal - caution * self.spread

    def best_image(self, caution: float = 0.0):
        """The image with the highest personal − caution × spread (the one shown
        as 'after')."""
        if not self.images:
            return None
        spread = np.asarray(self.image_spread or [0.0] * len(self.images))
        scores = np.asarray(self.image_personal) - caution * spread
        return self.images[int(np.argmax(scores))]


@dataclass
class Candidate:
    round: int
    prompt: str
    note: str
    outcome: Outcome | None = None
    rejected: str = ""  # why the guard refused it (then it was never rendered)


@dataclass
class Round:
    index: int
    candidates: list[Candidate]
    best: Candidate
    improved: bool
    duration_ms: int


@dataclass
class Result:
    base: Candidate
    best: Candidate
    rounds: list[Round]
    images_used: int
    stopped: str  # why it ended: "rounds", "budget", "exhausted", or an error


# One Outcome per prompt, or a string saying why the prompt could not be
# evaluated (e.g. the backend refused it): that candidate is recorded as rejected.
Evaluate = Callable[[list[str], int], list["Outcome | str"]]


def search(
    *,
    base_prompt: str,
    proposer: Proposer,
    evaluate: Evaluate,
    rounds: int,
    per_round: int,
    max_images: int,
    images_per_prompt: int = 1,
    seed: int = 0,
    caution: float = 0.0,
    on_round: Callable[[Round], None] | None = None,
) -> Result:
    rng = np.random.default_rng(seed)
    nouns = base_nouns(base_prompt)
    proposer.start(base_prompt)
    started = time.perf_counter()
    base = Candidate(round=0, prompt=base_prompt, note="base prompt")
    first_outcome = evaluate([base_prompt], 0)[0]
    if isinstance(first_outcome, str):
        raise ProposerError(f"The base prompt could not be evaluated: {first_outcome}")
    base.outcome = first_outcome
    used = images_per_prompt
    best = base
    history = [_evaluated(base, caution)]
    tried = {base_prompt}
    first = Round(0, [base], base, False, _ms(started))
    done: list[Round] = [first]
    if on_round:
        on_round(first)
    stopped = "rounds"
    for r in range(1, rounds + 1):
        n = min(per_round, (max_images - used) // images_per_prompt)
        if n <= 0:
            stopped = "budget"
            break
        t0 = time.perf_counter()
        try:
            proposals = proposer.propose(history=history, n=n, rng=rng)
        except ProposerError as exc:
            stopped = exc.message
            break
        cands, todo = _guard(proposals, nouns, tried, r, n)
        if not todo and not cands:
            stopped = "exhausted"
            break
        outcomes = evaluate([c.prompt for c in todo], r) if todo else []
        best, improved = _outcomes_record(todo, outcomes, history, best, caution)
        used += len(todo) * images_per_prompt
        rnd = Round(r, cands, best, improved, _ms(t0))
        done.append(rnd)
        if on_round:
            on_round(rnd)
    return Result(base=base, best=best, rounds=done, images_used=used, stopped=stopped)


def _outcomes_record(
    todo: list[Candidate],
    outcomes: list,
    history: list,
    best: Candidate,
    caution: float,
) -> tuple[Candidate, bool]:
    """Give each candidate its outcome (a string: why it was rejected), add the
    scored ones to the history; the best so far, and whether this round beat it."""
    for c, o in zip(todo, outcomes, strict=True):
        if isinstance(o, str):
            c.rejected = o
        else:
            c.outcome = o
            history.append(_evaluated(c, caution))
    scored = [c for c in todo if c.outcome is not None]
    if scored:
        top = max(scored, key=lambda c: c.outcome.score(caution))
        if top.outcome.score(caution) > best.outcome.score(caution):
            return top, True
    return best, False


def _guard(
    proposals: list[Proposal], nouns: list[str], tried: set[str], r: int, n: int
) -> tuple[list[Candidate], list[Candidate]]:
    """All candidates of a round (rejected ones included) and those to render."""
    cands: list[Candidate] = []
    todo: list[Candidate] = []
    for p in proposals:
        if p.prompt in tried:
            continue
        tried.add(p.prompt)
        c = Candidate(round=r, prompt=p.prompt, note=p.note)
        lost = missing_nouns(base_nouns=nouns, candidate=p.prompt)
        if lost:
            c.rejected = f"drops the subject: {', '.join(lost)}"
        elif len(todo) < n:
            todo.append(c)
        else:
            continue
        cands.append(c)
    return cands, todo


def _evaluated(c: Candidate, caution: float) -> Evaluated:
    o = c.outcome
    return Evaluated(c.prompt, o.personal, o.population, o.score(caution))


def _ms(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1000)
