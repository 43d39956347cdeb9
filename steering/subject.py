"""The subject guard: an edited prompt must keep every noun of the base prompt.

Without it an optimiser can raise a predicted score by drawing something else
("a cat" → "a sunset over the sea"), which is reward hacking, not steering.

Noun extraction is deliberately simple and documented rather than clever: the
base prompt's words, lower-cased, minus function words (articles, prepositions,
pronouns, conjunctions, auxiliaries, numbers), minus common adjectives, colour
words and the attribute vocabulary's own modifiers, minus words with adjective or
adverb endings (-ly, -ous, -ful, -ive, -ish, -less, -able, -ible, -ic, -ed). What
remains counts as a noun. It errs toward keeping too many words (a kept adjective
only makes the guard stricter). A word is matched in the candidate in its singular
or plural form ("cat" is kept by "cats").
"""

from __future__ import annotations

import re

from .vocab import VOCABULARY

_FUNCTION_WORDS = set(
    """
    a an the this that these those some any each every no all both either neither
    of in on at by for with without from to into onto over under above below
    between among through across along around behind beside near beyond upon
    within against toward towards about after before during until while
    and or but nor so yet as than then if when where which who whom whose what
    i me my mine we us our you your he him his she her it its they them their
    is are was were be been being am do does did has have had having will would
    can could shall should may might must not very too just only also
    one two three four five six seven eight nine ten many few several more most
    there here up down out off again once
    """.split()
)

_ADJECTIVES = set(
    """
    big small large tiny huge little tall short long old young new ancient modern
    beautiful pretty ugly cute lovely happy sad calm quiet loud bright dark light
    soft hard warm cold hot cool wet dry fresh clean dirty empty full rich poor
    red orange yellow green blue purple violet pink brown black white grey gray
    golden silver teal cyan magenta beige
    high low deep shallow wide narrow thin thick heavy fast slow strong weak
    early late distant far close open closed wild gentle lonely lone single
    simple complex detailed vivid muted pastel neon epic huge giant
    """.split()
)

_SUFFIXES = (
    "ly",
    "ous",
    "ful",
    "ive",
    "ish",
    "less",
    "able",
    "ible",
    "ic",
    "ed",
)


def _vocabulary_words() -> set[str]:
    words: set[str] = set()
    for phrases in VOCABULARY.values():
        for phrase in phrases:
            words.update(_tokens(phrase))
    return words


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'\-]*[a-z]|[a-z]", text.lower())


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def base_nouns(prompt: str) -> list[str]:
    """The nouns of a base prompt (singular forms, in order, without repeats)."""
    vocab = _vocabulary_words()
    outside_phrases = set(_tokens(_strip_vocab(prompt)))
    out: list[str] = []
    for word in _tokens(prompt):
        if word in _FUNCTION_WORDS or word in _ADJECTIVES or len(word) < 3:
            continue
        if word.endswith(_SUFFIXES) and len(word) > 5:
            continue
        if word in vocab and word not in outside_phrases:
            continue
        noun = _singular(word)
        if noun not in out:
            out.append(noun)
    return out


def _strip_vocab(prompt: str) -> str:
    """The prompt without any whole vocabulary phrase it contains."""
    text = prompt.lower()
    for phrases in VOCABULARY.values():
        for phrase in phrases:
            text = text.replace(phrase, " ")
    return text


def missing_nouns(*, base_nouns: list[str], candidate: str) -> list[str]:
    """Base nouns the candidate prompt no longer contains (empty: it passes)."""
    have = {_singular(w) for w in _tokens(candidate)}
    return [n for n in base_nouns if n not in have]
