"""The loop itself, without Django: trajectory, kept best, budget, subject guard."""

import numpy as np
import pytest

from steering import search
from steering.proposers import (
    AttributeBeam,
    AttributeGreedy,
    Proposal,
    Proposer,
    ProposerError,
)
from steering.subject import base_nouns, missing_nouns
from steering.vocab import VOCABULARY


def _taste(prompt: str) -> float:
    """A made-up scorer with a clear optimum inside the vocabulary."""
    score = 0.0
    score += 1.0 if "oil painting" in prompt else 0.0
    score += 0.7 if "golden hour light" in prompt else 0.0
    score -= 0.5 if "monochrome" in prompt else 0.0
    return score + 0.01 * (len(prompt) % 7)


def _evaluate(log):
    def evaluate(prompts, r):
        log.append((r, list(prompts)))
        return [
            search.Outcome(
                personal=_taste(p),
                population=-_taste(p),
                images=[f"img:{p}"],
                image_personal=[_taste(p)],
            )
            for p in prompts
        ]

    return evaluate


@pytest.mark.parametrize("proposer", [AttributeGreedy, AttributeBeam])
def test_trajectory_and_kept_best_never_decreases(proposer):
    log = []
    rounds = []
    result = search.search(
        base_prompt="a red fox in a forest",
        proposer=proposer(),
        evaluate=_evaluate(log),
        rounds=8,
        per_round=6,
        max_images=40,
        seed=3,
        on_round=rounds.append,
    )
    assert [r.index for r in rounds] == list(range(len(rounds)))
    bests = [r.best.outcome.personal for r in rounds]
    assert all(b2 >= b1 for b1, b2 in zip(bests, bests[1:], strict=False))
    every = [c for r in rounds for c in r.candidates if c.outcome]
    assert result.best.outcome.personal == max(c.outcome.personal for c in every)
    assert result.best.outcome.personal > result.base.outcome.personal
    # The budget counts every rendered image, the base's included.
    assert result.images_used == sum(len(p) for _, p in log) <= 40
    assert result.stopped == "budget"
    # Every variant keeps the base prompt's text and is tried once.
    prompts = [p for _, ps in log for p in ps]
    assert len(prompts) == len(set(prompts))
    assert all(p.startswith("a red fox in a forest") for p in prompts)


def test_budget_smaller_than_a_round():
    log = []
    result = search.search(
        base_prompt="a lighthouse",
        proposer=AttributeGreedy(),
        evaluate=_evaluate(log),
        rounds=5,
        per_round=10,
        max_images=4,
        images_per_prompt=1,
    )
    assert result.images_used == 4
    assert [len(p) for _, p in log] == [1, 3]


def test_nouns_of_a_base_prompt():
    assert base_nouns("A red fox sleeping in a snowy birch forest at dawn") == [
        "fox",
        "sleeping",
        "snowy",
        "birch",
        "forest",
        "dawn",
    ]
    # Vocabulary phrases in the base prompt are style, not subject.
    assert base_nouns("a lighthouse, golden hour light, oil painting") == ["lighthouse"]
    assert base_nouns("two cats and a puppy") == ["cat", "puppy"]


def test_missing_nouns_accepts_plural_and_refuses_a_new_subject():
    nouns = base_nouns("a cat on a sofa")
    assert missing_nouns(base_nouns=nouns, candidate="two cats on a velvet sofa") == []
    assert missing_nouns(base_nouns=nouns, candidate="a sunset over the sea") == [
        "cat",
        "sofa",
    ]
    assert missing_nouns(base_nouns=nouns, candidate="a dog on a sofa") == ["cat"]


class _Scripted(Proposer):
    """Proposes fixed rewrites (as an LLM would): some drop the subject."""

    name = "scripted"

    def __init__(self, batches):
        self.batches = list(batches)

    def propose(self, *, history, n, rng):
        if not self.batches:
            raise ProposerError("LLM proposer: HTTP 503: overloaded")
        return [Proposal(p, "rewrite") for p in self.batches.pop(0)]


def test_subject_guard_rejects_without_rendering():
    log = []
    rounds = []
    result = search.search(
        base_prompt="a cat on a sofa",
        proposer=_Scripted(
            [
                [
                    "a cat on a sofa, oil painting",
                    "a sunset, oil painting",
                    "a dog on a sofa, golden hour light",
                ]
            ]
        ),
        evaluate=_evaluate(log),
        rounds=3,
        per_round=5,
        max_images=20,
        on_round=rounds.append,
    )
    rendered = [p for _, ps in log for p in ps]
    assert rendered == ["a cat on a sofa", "a cat on a sofa, oil painting"]
    rejected = {c.prompt: c.rejected for c in rounds[1].candidates if c.rejected}
    assert rejected == {
        "a sunset, oil painting": "drops the subject: cat, sofa",
        "a dog on a sofa, golden hour light": "drops the subject: cat",
    }
    assert result.best.prompt == "a cat on a sofa, oil painting"
    # A proposer failure ends the search, keeping what was found, with the reason.
    assert result.stopped == "LLM proposer: HTTP 503: overloaded"


def test_failed_render_is_recorded_not_scored():
    def evaluate(prompts, r):
        return [
            "generation failed: refused by moderation"
            if "oil" in p
            else search.Outcome(
                personal=_taste(p),
                population=0.0,
                images=[p],
                image_personal=[_taste(p)],
            )
            for p in prompts
        ]

    rounds = []
    search.search(
        base_prompt="a cat",
        proposer=_Scripted([["a cat, oil painting", "a cat, golden hour light"]]),
        evaluate=evaluate,
        rounds=1,
        per_round=5,
        max_images=10,
        on_round=rounds.append,
    )
    c = {c.prompt: c for c in rounds[1].candidates}
    assert c["a cat, oil painting"].outcome is None
    assert c["a cat, oil painting"].rejected.startswith("generation failed")
    assert rounds[1].best.prompt == "a cat, golden hour light"


def test_beam_children_are_vocabulary_compositions():
    p = AttributeBeam(beam_width=3)
    p.start("a harbour")
    rng = np.random.default_rng(0)
    from steering.proposers import Evaluated

    history = [Evaluated("a harbour", 0.0, 0.0)]
    seen = set()
    for _ in range(5):
        props = p.propose(history=history, n=6, rng=rng)
        assert len(props) == 6
        for pr in props:
            assert pr.prompt not in seen
            seen.add(pr.prompt)
            extra = pr.prompt.removeprefix("a harbour").strip(", ").split(", ")
            allowed = {ph for phrases in VOCABULARY.values() for ph in phrases}
            assert set(extra) <= allowed
            history.append(Evaluated(pr.prompt, float(rng.normal()), 0.0))


def _spread(prompt: str) -> float:
    """A made-up spread: the model is unsure about oil paintings."""
    return 2.0 if "oil painting" in prompt else 0.1


def _evaluate_with_spread(prompt_log):
    def evaluate(prompts, r):
        prompt_log.extend(prompts)
        return [
            search.Outcome(
                personal=_taste(p),
                population=0.0,
                spread=_spread(p),
                images=[f"img:{p}"],
                image_personal=[_taste(p)],
                image_spread=[_spread(p)],
            )
            for p in prompts
        ]

    return evaluate


@pytest.mark.parametrize("caution", [0.0, 1.0])
def test_caution_ranks_by_the_lower_bound_and_it_never_decreases(caution):
    seen, rounds = [], []
    result = search.search(
        base_prompt="a red fox in a forest",
        proposer=AttributeBeam(),
        evaluate=_evaluate_with_spread(seen),
        rounds=6,
        per_round=8,
        max_images=49,
        seed=5,
        caution=caution,
        on_round=rounds.append,
    )
    every = [c for r in rounds for c in r.candidates if c.outcome]
    assert any("oil painting" in c.prompt for c in every)
    kept = [r.best.outcome.score(caution) for r in rounds]
    assert kept == sorted(kept)
    assert result.best.outcome.score(caution) == max(
        c.outcome.score(caution) for c in every
    )
    if caution:  # +1.0 for oil painting is not worth a spread of 2.0
        assert "oil painting" not in result.best.prompt
    else:
        assert "oil painting" in result.best.prompt


def test_the_after_image_is_the_best_lower_bound_among_the_prompts_images():
    o = search.Outcome(
        personal=1.0,
        population=0.0,
        images=["sure", "unsure"],
        image_personal=[0.9, 1.1],
        image_spread=[0.1, 1.0],
    )
    assert o.best_image() == "unsure"
    assert o.best_image(caution=1.0) == "sure"
