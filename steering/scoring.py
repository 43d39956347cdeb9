"""Scores for candidate images from the reward model's public inference.

The only door into ``rewardmodel`` from steering: the active version for the
annotator's study (pinned for a whole run, so every candidate is judged by the same
model), embeddings for images the model has not seen yet, and ``predict``.

Personal score: ``predict`` for the annotator. Population score (the reward-
hacking guard shown next to it): the mean prediction over the study's other raters
(the ``POPULATION_RATERS`` who rated most, ties by id), i.e. what the crowd as the
model knows it would think of the image. An optimiser that only pleases the
personal model while the crowd's score collapses is visible at a glance.

Spread: the posterior sd of the annotator's own part of the personal score
(``predict(spread=True)``), which the search discounts (``search.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db.models import Count, Q

from annotation.studies.models import Annotator, Study
from core.exceptions import Conflict

POPULATION_RATERS = 30


def version_for(*, study: Study):
    """The reward model version that scores for this study, or Conflict."""
    from rewardmodel import selectors

    try:
        version = selectors.version_active(study=study)
    except TypeError:  # one active version for all studies
        version = selectors.version_active()
    if version is None:
        raise Conflict(
            "No active reward model for this study yet: train one first "
            "(train_reward_model)."
        )
    return version


def population_raters(*, study: Study, exclude: Annotator | None = None) -> list:
    qs = (
        Annotator.objects.filter(ratings__study=study, ratings__is_valid=True)
        .exclude(status=Annotator.Status.EXCLUDED)
        .annotate(n=Count("ratings", filter=Q(ratings__study=study)))
        .order_by("-n", "pk")
    )
    if exclude is not None:
        qs = qs.exclude(pk=exclude.pk)
    return list(qs[:POPULATION_RATERS])


@dataclass
class Scores:
    personal: list[float]
    population: list[float]
    ms: int
    spread: list[float] | None = None  # None: no uncertainty known (zeros)


class RewardModelScorer:
    """Personal and population scores of stored images, one pinned version."""

    def __init__(self, *, annotator: Annotator, study: Study):
        self.annotator = annotator
        self.version = version_for(study=study)
        self.raters = population_raters(study=study, exclude=annotator)
        if not self.raters:
            raise Conflict(
                "The study has no other raters yet, so there is no population "
                "score to guard the personal one with."
            )

    @property
    def label(self) -> str:
        return f"version {self.version.pk} ({self.version.backbone})"

    def score(self, image_ids: list[int]) -> Scores:
        from rewardmodel import embeddings, inference

        t0 = time.perf_counter()
        ids = [int(i) for i in image_ids]
        embeddings.embeddings_compute(backbone=self.version.backbone, image_ids=ids)
        result = inference.predict(
            annotator=self.annotator, image_ids=ids, version=self.version, spread=True
        )
        if result.get("pending"):
            raise Conflict(
                f"{len(result['pending'])} candidate image(s) have no "
                f"{self.version.backbone} embedding after embedding them."
            )
        mine = result["scores"]
        personal = [float(mine[i]) for i in ids]
        spread = [float(result["spread"][i]) for i in ids]
        sums = [0.0] * len(ids)
        for rater in self.raters:
            theirs = inference.predict(
                annotator=rater, image_ids=ids, version=self.version
            )["scores"]
            sums = [s + float(theirs[i]) for s, i in zip(sums, ids, strict=True)]
        population = [s / len(self.raters) for s in sums]
        ms = int((time.perf_counter() - t0) * 1000)
        return Scores(personal, population, ms, spread)
