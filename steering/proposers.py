"""Proposers: where the next prompt variants come from.

A proposer sees the history of evaluated prompts (prompt, personal and population
score, and the score the search maximises) and returns new, untried variants.
Three are built in:

* ``attribute`` - greedy attribute editor: single edits (set, change or drop one
  vocabulary category) of the best prompt so far, drawn at random;
* ``beam`` - evolutionary beam search over the same vocabulary: children of the
  best ``beam_width`` prompts by mutation (one or two edits) and crossover (each
  category taken from one of two parents);
* ``llm`` - an LLM rewriter behind an OpenAI-compatible chat API, shown the best
  and worst prompts with their scores and asked for rewrites.

The search, not the proposer, enforces the subject guard and the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import llm
from .subject import base_nouns
from .vocab import CATEGORIES, VOCABULARY, compose, single_edits, state_key


class ProposerError(Exception):
    """The proposer could not produce variants (message for a person)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class Proposal:
    prompt: str
    note: str


@dataclass
class Evaluated:
    prompt: str
    personal: float
    population: float
    score: float | None = None  # what the search maximises; None: personal

    def __post_init__(self):
        if self.score is None:
            self.score = self.personal


class Proposer:
    name = ""

    def start(self, base: str) -> None:
        self.base = base

    def propose(
        self, *, history: list[Evaluated], n: int, rng: np.random.Generator
    ) -> list[Proposal]:
        raise NotImplementedError


@dataclass
class _VocabularyProposer(Proposer):
    states: dict[str, dict] = field(default_factory=dict)

    def start(self, base: str) -> None:
        super().start(base)
        self.states = {compose(base, {}): {}}
        self._seen = {state_key({})}

    def _child(self, state: dict, note: str, out: list[Proposal]) -> bool:
        key = state_key(state)
        if key in self._seen:
            return False
        self._seen.add(key)
        prompt = compose(self.base, state)
        self.states[prompt] = state
        out.append(Proposal(prompt=prompt, note=note))
        return True

    def _ranked(self, history: list[Evaluated]) -> list[Evaluated]:
        known = [h for h in history if h.prompt in self.states]
        return sorted(known, key=lambda h: -h.score)


class AttributeGreedy(_VocabularyProposer):
    """Single random edits of the best prompt so far (hill climbing)."""

    name = "attribute"

    def propose(self, *, history, n, rng):
        ranked = self._ranked(history)
        best = self.states[ranked[0].prompt] if ranked else {}
        edits = [(s, note) for s, note in single_edits(best)]
        out: list[Proposal] = []
        for i in rng.permutation(len(edits)):
            if len(out) >= n:
                break
            self._child(*edits[i], out)
        return out


@dataclass
class AttributeBeam(_VocabularyProposer):
    """Evolutionary beam search: mutation and crossover of the best few."""

    name = "beam"
    beam_width: int = 4
    crossover_rate: float = 0.3

    def _mutate(self, state: dict, rng) -> tuple[dict, str]:
        edits = single_edits(state)
        child, note = edits[int(rng.integers(len(edits)))]
        if rng.random() < 0.3:  # sometimes two steps, to leave a local optimum
            edits2 = single_edits(child)
            child, note2 = edits2[int(rng.integers(len(edits2)))]
            note = f"{note}; {note2}"
        return child, note

    def _crossover(self, a: dict, b: dict, rng) -> dict:
        child = {}
        for cat in CATEGORIES:
            pick = a if rng.random() < 0.5 else b
            if pick.get(cat):
                child[cat] = pick[cat]
        return child

    def propose(self, *, history, n, rng):
        ranked = self._ranked(history)[: self.beam_width]
        parents = [self.states[h.prompt] for h in ranked] or [{}]
        out: list[Proposal] = []
        tries = 0
        while len(out) < n and tries < 50 * max(n, 1):
            tries += 1
            if len(parents) > 1 and rng.random() < self.crossover_rate:
                i, j = rng.choice(len(parents), size=2, replace=False)
                child = self._crossover(parents[i], parents[j], rng)
                child, note = self._mutate(child, rng)
                note = f"crossover of beam {i + 1} and {j + 1}, then {note}"
            else:
                # Better parents are picked more often (rank-weighted).
                w = 1.0 / (1.0 + np.arange(len(parents)))
                i = int(rng.choice(len(parents), p=w / w.sum()))
                child, note = self._mutate(parents[i], rng)
                note = f"beam {i + 1}: {note}"
            self._child(child, note, out)
        return out


SYSTEM_PROMPT = (
    "You rewrite prompts for a text-to-image generator so that the images suit one "
    "particular person's taste better. You are given the original prompt, the nouns "
    "that must stay, and prompts tried so far with the score a model of that "
    "person's taste gave each image (higher is better). Vary lighting, camera "
    "angle, viewpoint, lens, palette, medium, style, composition and mood; keep "
    "the subject: every listed noun must appear in every rewrite. Answer with JSON "
    'only: {"prompts": ["...", "..."]}.'
)


@dataclass
class LLMRewriter(Proposer):
    """Rewrites from an OpenAI-compatible chat model."""

    name = "llm"
    config: llm.ChatConfig | None = None
    shown_best: int = 6
    shown_worst: int = 3
    calls: int = 0

    def _messages(self, history: list[Evaluated], n: int) -> list[dict]:
        ranked = sorted(history, key=lambda h: -h.score)
        shown = ranked[: self.shown_best]
        shown += [h for h in ranked[-self.shown_worst :] if h not in shown]
        lines = [f"{h.score:+.3f}  {h.prompt}" for h in shown]
        user = (
            f"Original prompt: {self.base}\n"
            f"Nouns to keep: {', '.join(base_nouns(self.base)) or '(none)'}\n"
            "Tried so far (score, prompt):\n"
            + "\n".join(lines)
            + f"\n\nWrite {n} new prompts, each different from all of the above."
        )
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ]

    def propose(self, *, history, n, rng):
        config = self.config or llm.ChatConfig.from_settings()
        self.calls += 1
        try:
            text = llm.chat_complete(config=config, messages=self._messages(history, n))
            prompts = llm.parse_prompt_list(text)
        except llm.LLMError as exc:
            raise ProposerError(f"LLM proposer: {exc.message}") from exc
        tried = {h.prompt for h in history}
        out: list[Proposal] = []
        for p in prompts:
            if p not in tried and all(p != o.prompt for o in out):
                out.append(Proposal(prompt=p, note="LLM rewrite"))
        return out[:n]


PROPOSERS = {"attribute": AttributeGreedy, "beam": AttributeBeam, "llm": LLMRewriter}


def proposer_get(name: str, **kwargs) -> Proposer:
    if name not in PROPOSERS:
        raise ProposerError(
            f"Unknown proposer '{name}' (available: {', '.join(PROPOSERS)})."
        )
    return PROPOSERS[name](**kwargs)


__all__ = ["VOCABULARY", "Proposal", "Evaluated", "proposer_get", "ProposerError"]
