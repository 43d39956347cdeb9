"""Reads for the taste portrait: who may see it, and the portrait itself.

The portrait of one participant in one study is built per request from their
own ratings, the study's active reward model through its public inference API
(``rewardmodel.inference.predict``: the live newcomer path, so the rating just
made already counts) and one aggregate of the other raters. Other participants
enter only as that aggregate: the mean of an image's valid ratings by everyone
else, shown only where at least ``CROWD_MIN`` other people rated it, taken from
the ratings the model version was trained on (so it moves when the model is
retrained, never with one new rating: reloading the page cannot subtract one
person's score out of it) and rounded to half a point."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from django.db.models import Avg, Count

from annotation.engine.models import Rating
from annotation.studies.models import Annotator, Image, Participation, Study
from core.exceptions import Conflict, NotFound, NotMember, NotPermitted
from rewardmodel import inference
from rewardmodel.models import ModelVersion

from . import words
from .models import ANSWER_FIELDS, PortraitFeedback, PortraitSettings
from .tokens import feedback_token, picture_url

SHOWN = 4  # images per group
CROWD_MIN = 5  # other raters an image needs before its crowd mean is shown
CROWD_ROUND = 0.5  # the crowd mean is shown to the nearest half point
AGREEMENT_MIN = 8  # shared images before a sentence about agreement
DEPART_SHARE = 0.25  # of the scale's range: "far more / far less than the crowd"


@dataclass
class Picture:
    image_id: int
    url: str
    width: int
    height: int
    score: int | None = None  # their own rating
    label: str = ""  # the scale's word for it
    crowd: float | None = None  # the crowd mean, rounded
    token: str = ""  # feedback form's name of the image (predicted ones)
    answer: str = ""  # their "this is me" answer so far
    side: str = ""


@dataclass
class Portrait:
    study: Study
    n_ratings: int
    min_ratings: int
    highest: list[Picture] = field(default_factory=list)
    lowest: list[Picture] = field(default_factory=list)
    # The model: "ok", "no_model", "pending" (no embeddings yet) or "none_left".
    model_state: str = "no_model"
    certainty: str = "unsure"
    certainty_words: str = ""
    typical_spread: float | None = None
    liked_pred: list[Picture] = field(default_factory=list)
    disliked_pred: list[Picture] = field(default_factory=list)
    agreement: float | None = None
    agreement_n: int = 0
    agreement_words: str = ""
    liked_more: list[Picture] = field(default_factory=list)
    liked_less: list[Picture] = field(default_factory=list)
    agreed: list[Picture] = field(default_factory=list)

    crowd_min: int = CROWD_MIN

    @property
    def needed(self) -> int:
        return max(self.min_ratings - self.n_ratings, 0)


# --- who may see it ------------------------------------------------------------


def portrait_settings(*, study: Study) -> PortraitSettings:
    """The study's settings (unsaved defaults, portrait off, when it has none)."""
    found = PortraitSettings.objects.filter(study=study).first()
    return found or PortraitSettings(study=study)


def redirected(*, study: Study, annotator: Annotator) -> bool:
    """Whether this participant is sent back to a recruiting platform at the end
    (the study has a completion URL, or they came from Prolific)."""
    return bool(study.completion_url) or annotator.source == "prolific"


def portrait_visible(*, settings: PortraitSettings, study, annotator) -> bool:
    """The portrait is on, and a participant who is redirected at the end may
    see it (``before_completion_redirect``)."""
    if not settings.enabled:
        return False
    return settings.before_completion_redirect or not redirected(
        study=study, annotator=annotator
    )


def portrait_access_check(
    *, study: Study, annotator: Annotator, participation: Participation
) -> PortraitSettings:
    """Raise unless this participant may open the portrait page."""
    settings = portrait_settings(study=study)
    if not settings.enabled:
        raise NotFound("This study has no taste portrait.")
    if participation.consented_at is None:
        raise NotMember()
    if participation.status == Participation.Status.EXCLUDED:
        raise NotPermitted("Your participation in this study has ended.")
    if not portrait_visible(settings=settings, study=study, annotator=annotator):
        raise NotPermitted("This study does not show a taste portrait.")
    return settings


def rating_count(*, study: Study, annotator: Annotator) -> int:
    return Rating.objects.filter(
        study=study, annotator=annotator, is_valid=True
    ).count()


# --- the portrait --------------------------------------------------------------


def portrait_build(
    *, study: Study, annotator: Annotator, min_ratings: int, feedback: bool = True
) -> Portrait:
    """The portrait of ``annotator`` in ``study`` (only its rating count while
    they have fewer than ``min_ratings``)."""
    own = list(
        Rating.objects.filter(study=study, annotator=annotator, is_valid=True)
        .order_by("-score", "-pk")
        .values_list("image_id", "score", "image__width", "image__height")
    )
    p = Portrait(study=study, n_ratings=len(own), min_ratings=min_ratings)
    if p.needed:
        return p
    labels = dict(study.scale_points)

    def pic(row) -> Picture:
        return Picture(
            row[0], picture_url(row[0]), row[2], row[3], row[1], labels.get(row[1], "")
        )

    p.highest = [pic(r) for r in own[:SHOWN]]
    p.lowest = [pic(r) for r in own[::-1][:SHOWN]]
    version_id = _predictions(p, study=study, annotator=annotator)
    if feedback:
        _answers(p, annotator=annotator)
    if version_id is not None:
        _crowd(p, own=own, pic=pic, version_id=version_id, annotator=annotator)
    return p


def unrated_ids(*, study: Study, annotator: Annotator) -> list[int]:
    """The study's images the participant has not rated (what the portrait
    predicts for)."""
    rated = Rating.objects.filter(study=study, annotator=annotator).values("image_id")
    return list(
        Image.objects.filter(study=study)
        .exclude(pk__in=rated)
        .values_list("pk", flat=True)
    )


def predicted_scores(*, study: Study, annotator: Annotator) -> tuple[list, dict]:
    """(the unrated images, ``inference.predict``'s answer for them): the live
    newcomer path, so the participant's latest rating already counts."""
    ids = unrated_ids(study=study, annotator=annotator)
    return ids, inference.predict(annotator=annotator, image_ids=ids)


def _predictions(p: Portrait, *, study: Study, annotator: Annotator) -> int | None:
    """Fill the predicted favourites and least liked, and how sure the model is;
    returns the serving version's id (None without a model)."""
    ids = unrated_ids(study=study, annotator=annotator)
    # With nothing left to predict, one rated image still names the version
    # (its crowd cut-off is needed below).
    ask = ids or [p.highest[0].image_id]
    try:
        got = inference.predict(annotator=annotator, image_ids=ask)
    except Conflict:
        p.model_state = "no_model"
        return None
    scores = got["scores"]
    if not ids:
        p.model_state = "none_left"
        return got["version"]
    if not scores:
        p.model_state = "pending"
        return got["version"]
    order = sorted(scores, key=lambda i: (-scores[i], i))
    top = order[:SHOWN]
    bottom = [i for i in order[::-1] if i not in top][:SHOWN]
    spread = inference.predict(
        annotator=annotator, image_ids=top + bottom, spread=True
    )["spread"]
    _certainty(p, scores, spread, top, bottom)
    if p.certainty != "unsure":
        meta = dict(
            (pk, (w, h))
            for pk, w, h in Image.objects.filter(pk__in=top + bottom).values_list(
                "pk", "width", "height"
            )
        )
        p.liked_pred = [_predicted(i, meta, "like") for i in top]
        p.disliked_pred = [_predicted(i, meta, "dislike") for i in bottom]
    p.model_state = "ok"
    return got["version"]


def _predicted(image_id: int, meta: dict, side: str) -> Picture:
    w, h = meta[image_id]
    return Picture(
        image_id, picture_url(image_id), w, h, token=feedback_token(image_id), side=side
    )


def _certainty(
    p: Portrait, scores: dict, spread: dict, top: list, bottom: list
) -> None:
    """How far apart the predicted favourites and least liked are, in units of
    the model's posterior sd of the participant's own part on those images. A
    spread of 0 everywhere means the version has no personal part (τ = 0)."""
    sds = np.asarray([spread[i] for i in top + bottom])
    gap = float(
        np.mean([scores[i] for i in top]) - np.mean([scores[i] for i in bottom])
    )
    sd = float(np.median(sds))
    p.typical_spread = sd
    if not np.any(sds > 0):
        p.certainty = "not_personal"
    elif len(scores) < 2 * SHOWN:
        p.certainty = "unsure"  # too few images left to contrast
    else:
        p.certainty = words.certainty_level(gap / (2.0 * sd))
    p.certainty_words = words.certainty_words(p.certainty, p.n_ratings)


def _answers(p: Portrait, *, annotator: Annotator) -> None:
    shown = {x.image_id: x for x in p.liked_pred + p.disliked_pred}
    if not shown:
        return
    for image_id, answer in PortraitFeedback.objects.filter(
        annotator=annotator, image_id__in=list(shown)
    ).values_list("image_id", "answer"):
        shown[image_id].answer = answer


def crowd_means(
    *, study: Study, annotator: Annotator, image_ids, up_to: int | None
) -> dict:
    """{image id: (mean, n)} of the other participants' valid ratings of these
    images, up to rating id ``up_to``, where at least ``CROWD_MIN`` rated it."""
    qs = Rating.objects.filter(study=study, is_valid=True, image_id__in=image_ids)
    qs = qs.exclude(annotator=annotator)
    if up_to is not None:
        qs = qs.filter(pk__lte=up_to)
    rows = qs.values("image_id").annotate(m=Avg("score"), n=Count("pk"))
    return {
        r["image_id"]: (_rounded(r["m"]), r["n"]) for r in rows.filter(n__gte=CROWD_MIN)
    }


def _rounded(x: float) -> float:
    return round(float(x) / CROWD_ROUND) * CROWD_ROUND


def _crowd(p: Portrait, *, own: list, pic, version_id: int, annotator) -> None:
    """Where the participant agrees with the crowd and where they depart."""
    up_to = (
        ModelVersion.objects.filter(pk=version_id)
        .values_list("training_run__last_rating_id", flat=True)
        .first()
    )
    crowd = crowd_means(
        study=p.study, annotator=annotator, image_ids=[r[0] for r in own], up_to=up_to
    )
    shared = [r for r in own if r[0] in crowd]
    p.agreement_n = len(shared)
    if len(shared) < AGREEMENT_MIN:
        return
    mine = np.asarray([r[1] for r in shared], float)
    theirs = np.asarray([crowd[r[0]][0] for r in shared], float)
    if mine.std() > 0 and theirs.std() > 0:
        p.agreement = float(np.corrcoef(mine, theirs)[0, 1])
    p.agreement_words = words.agreement_words(p.agreement, len(shared))
    far = DEPART_SHARE * (p.study.scale_max - p.study.scale_min)
    diffs = sorted(((r[1] - crowd[r[0]][0], r) for r in shared), key=lambda d: -d[0])

    def with_crowd(r) -> Picture:
        x = pic(r)
        x.crowd = crowd[r[0]][0]
        return x

    p.liked_more = [with_crowd(r) for d, r in diffs[:SHOWN] if d >= far]
    p.liked_less = [with_crowd(r) for d, r in diffs[::-1][:SHOWN] if d <= -far]
    close = sorted(diffs, key=lambda d: (abs(d[0]), -d[1][1]))
    p.agreed = [with_crowd(r) for d, r in close[:SHOWN] if abs(d) <= CROWD_ROUND]


FEEDBACK_COLUMNS = [
    "annotator",  # pseudonymous public id, as in the export
    "image_sha256",  # the image's key, as in the export
    "answer",
    "side",
    "predicted",
    "spread",
    "version",
    "n_ratings",
    "created_at",
    "updated_at",
]


def feedback_rows(*, study: Study):
    """The participants' "this is me / not me" answers of one study, for the lab
    (``manage.py export_portrait_feedback``), oldest first."""
    return (
        PortraitFeedback.objects.filter(study=study)
        .order_by("created_at", "pk")
        .values_list("annotator__public_id", "image__sha256", *ANSWER_FIELDS)
    )
