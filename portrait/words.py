"""The portrait's plain words: how close a participant's taste is to the
crowd's, and how sure the model is. Thresholds are fixed here (never tuned on
data) and the strings go through Django's translation machinery."""

from __future__ import annotations

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

# Correlation of a participant's scores with the crowd's means on the same images.
CLOSE, PARTLY = 0.6, 0.3
# Separation of the predicted favourites from the predicted least liked, in
# units of the model's typical posterior sd (2 sd apart: the two groups' own
# intervals do not overlap).
SURE, SOMEWHAT = 3.0, 1.0


def agreement_words(r: float | None, n: int) -> str:
    if r is None:
        return _(
            "You gave nearly every image the same score, so there is no pattern "
            "to compare with the crowd yet."
        )
    if r >= CLOSE:
        return _(
            "Your taste is close to the crowd's: you mostly like what most people like."
        )
    if r >= PARTLY:
        return _(
            "You share part of the common taste, and go your own way on many images."
        )
    return _(
        "Your taste is your own: what you like has little to do with what most "
        "people like."
    )


def certainty_level(separation: float) -> str:
    if separation >= SURE:
        return "sure"
    if separation >= SOMEWHAT:
        return "somewhat"
    return "unsure"


def certainty_words(level: str, n: int) -> str:
    """One whole sentence per level (translators get sentences, never parts
    glued together), with the number of ratings it rests on."""
    if level == "sure":
        text = ngettext(
            "Based on your %(n)d rating, the model is fairly sure of what you like.",
            "Based on your %(n)d ratings, the model is fairly sure of what you like.",
            n,
        )
    elif level == "somewhat":
        text = ngettext(
            "Based on your %(n)d rating, the model has a first idea of what you "
            "like, but it can still be wrong.",
            "Based on your %(n)d ratings, the model has a first idea of what you "
            "like, but it can still be wrong.",
            n,
        )
    elif level == "not_personal":
        text = ngettext(
            "Based on your %(n)d rating, this study's model does not learn "
            "individual taste yet: the images below are what most people like, "
            "not yet what you like.",
            "Based on your %(n)d ratings, this study's model does not learn "
            "individual taste yet: the images below are what most people like, "
            "not yet what you like.",
            n,
        )
    else:
        text = ngettext(
            "Based on your %(n)d rating, the model cannot tell yet what you would "
            "like: it would only be guessing, so it shows no predictions. Rating "
            "more images sharpens it.",
            "Based on your %(n)d ratings, the model cannot tell yet what you would "
            "like: it would only be guessing, so it shows no predictions. Rating "
            "more images sharpens it.",
            n,
        )
    return text % {"n": n}
