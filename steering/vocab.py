"""The curated vocabulary the attribute editor composes prompts from.

Nine categories of compositional attributes (the ones the reference study found
moving images toward one person's taste). The phrases are ordinary photography and
art-direction terms, written for people and hosted generators; they were not chosen
by looking at what the offline procedural generator reacts to.

A prompt is the base prompt plus at most one phrase per category, appended in the
fixed category order below, so the same choice always yields the same text.
"""

from __future__ import annotations

VOCABULARY: dict[str, tuple[str, ...]] = {
    "lighting": (
        "golden hour light",
        "soft diffused light",
        "harsh midday sun",
        "dramatic rim lighting",
        "neon night lighting",
        "candlelit",
        "overcast daylight",
        "backlit silhouette",
    ),
    "camera angle": (
        "low angle shot",
        "high angle shot",
        "eye-level shot",
        "dutch angle",
        "overhead flat lay",
    ),
    "viewpoint": (
        "extreme close-up",
        "close-up",
        "medium shot",
        "wide establishing shot",
        "aerial view",
    ),
    "lens": (
        "35mm lens",
        "85mm portrait lens",
        "ultra wide-angle lens",
        "macro lens",
        "telephoto compression",
        "fisheye lens",
        "shallow depth of field",
    ),
    "palette": (
        "warm earthy palette",
        "cool blue palette",
        "pastel colours",
        "vivid saturated colours",
        "monochrome",
        "muted desaturated tones",
        "complementary teal and orange",
    ),
    "medium": (
        "oil painting",
        "watercolour",
        "35mm film photograph",
        "digital render",
        "charcoal sketch",
        "linocut print",
        "studio photograph",
    ),
    "style": (
        "impressionist",
        "art nouveau",
        "minimalist",
        "baroque",
        "surrealist",
        "ukiyo-e",
        "cinematic",
        "documentary",
    ),
    "composition": (
        "rule of thirds",
        "centred symmetrical composition",
        "leading lines",
        "negative space",
        "frame within a frame",
        "busy layered composition",
    ),
    "mood": (
        "serene",
        "melancholic",
        "joyful",
        "mysterious",
        "dramatic",
        "nostalgic",
        "dreamy",
    ),
}

CATEGORIES: tuple[str, ...] = tuple(VOCABULARY)


def compose(base: str, state: dict[str, str]) -> str:
    """The prompt for a base and a choice of phrases (category → phrase)."""
    parts = [base.strip().rstrip(",")]
    parts += [state[c] for c in CATEGORIES if state.get(c)]
    return ", ".join(parts)


def state_key(state: dict[str, str]) -> tuple:
    return tuple(state.get(c) or "" for c in CATEGORIES)


def single_edits(state: dict[str, str]) -> list[tuple[dict[str, str], str]]:
    """Every state one edit away (set, change or drop one category), with a note."""
    out = []
    for cat in CATEGORIES:
        current = state.get(cat)
        for phrase in VOCABULARY[cat]:
            if phrase != current:
                out.append(({**state, cat: phrase}, f"{cat}: {phrase}"))
        if current:
            rest = {k: v for k, v in state.items() if k != cat}
            out.append((rest, f"{cat}: (dropped)"))
    return out
