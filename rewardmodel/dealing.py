"""Rankings for adaptive dealing (issue 27): each annotator's open images, most
informative about their own taste first.

The model's uncertainty about annotator *a*'s own taste is the posterior of
their head δ_a (prior N(0, τ²D), unit noise in their normalised units; Σ its
covariance in feature space, ``posterior.LivePosterior``). A rating of image
*i* is y = f(i)·δ_a + noise, so the information it brings about δ_a is
½ log(1 + v_i) nats, v_i = f(i) Σ f(i)ᵀ. The ranking is **greedy in that
information, conditioned on the ranking so far**: rank 1 is the image of
largest variance; rank r the largest variance *given* ratings of ranks
1..r−1 (in this linear Gaussian model the variance after a rating does not
depend on the score, so the whole ranking is known in advance). Conditioning
matters: the top images by marginal variance tend to lie along one
direction, and rating them all would teach the same thing many times. Each
rank stores its conditional information (nats).

What the ranking is computed from (``inference.posterior``): the version
serving the study, and Σ given **every** rating the annotator has given there
(for an annotator the version was fitted on, the ratings it was fitted on
and then those given since; for anyone else the live newcomer path, their
ratings now). Before issue 27's second look a fitted annotator's ranking was
the version's alone until the next training run, so between runs a refresh
changed nothing but the images dealt. It is refreshed after each training
run (hooked on the run's completion) and as anyone rates
(``dealing_refresh_soon``: a Celery task at most once per
``REFRESH_THROTTLE_S`` per annotator per process, so the rating request never
waits for it). A ranking a rating or two stale still deals well: rank r was
chosen as if ranks 1..r−1 had been rated, which is what happened when they
were dealt in order. The candidates are the study's fullest open images
(``dealing_candidates``, bounded), so a ranking lists the images the claim's
band admits first. The claim reads the ranking
(``annotation.engine.services.dealing``).
"""

from __future__ import annotations

import logging

import numpy as np
from django.core.cache import cache
from django.db import transaction

from annotation.engine.selectors import annotator_rated
from annotation.engine.services import (
    ADAPTIVE,
    dealing_candidates,
    dealing_ranking_replace,
)
from annotation.studies.models import Annotator, Participation, Study
from core.exceptions import Conflict

from . import inference

log = logging.getLogger(__name__)

# How many images a ranking holds: the claim walks at most this many rows.
DEPTH = 200
REFRESH_THROTTLE_S = 5


def greedy_information(
    post: inference.Posterior, depth: int
) -> list[tuple[int, float]]:
    """(image id, information in nats) best first, at most ``depth``: greedy in
    the posterior variance conditioned on the ratings ranked before (a pivoted
    Cholesky of the images' posterior covariance G Σ Gᵀ plus unit noise; Σ in
    feature space, so each rank costs O(m·(d + r)) for m images)."""
    g = np.asarray(post.features, np.float64)
    cov = np.asarray(post.cov, np.float64)
    m = g.shape[0]
    if m == 0 or not np.any(cov):
        return []
    gs = g @ cov  # (m, d): G Σ
    var = np.maximum(np.einsum("ij,ij->i", gs, g), 0.0)
    taken = np.zeros(m, bool)
    cols: list[np.ndarray] = []
    out = []
    for _ in range(min(depth, m)):
        c = int(np.argmax(np.where(taken, -np.inf, var)))
        vc = float(var[c])
        if vc <= 1e-12:
            break
        cross = gs @ g[c]  # prior-to-now covariance of every image with c
        for col in cols:
            cross -= col * col[c]
        col = cross / np.sqrt(vc + 1.0)
        cols.append(col)
        var = np.maximum(var - col**2, 0.0)
        taken[c] = True
        out.append((post.image_ids[c], 0.5 * float(np.log1p(vc))))
    return out


def dealing_rank(*, annotator: Annotator, study: Study, depth: int = DEPTH):
    """(ranking, uncertainty, version id, how) for the annotator in the study:
    the ranking of ``greedy_information`` over the images open to them, and
    their model's uncertainty there (mean posterior sd of their own part of
    the score in their normalised units, i.e. in standard deviations of their
    own ratings: comparable between people and never growing as they rate;
    None when nothing is open or no version serves the study)."""
    ids = dealing_candidates(study_id=study.pk, annotator_id=annotator.pk)
    if not ids:
        return [], None, None, ""
    try:
        version = inference.version_for(image_ids=ids, annotator=annotator)
        post = inference.posterior(annotator=annotator, image_ids=ids, version=version)
    except Conflict as exc:  # no version yet, no embedding yet
        log.info("dealing: no ranking for %s in %s: %s", annotator.pk, study.pk, exc)
        return [], None, None, ""
    sd = post.sd() if post.features.shape[0] else np.zeros(0)
    uncertainty = float(np.mean(sd)) if sd.size else None
    return greedy_information(post, depth), uncertainty, version.pk, post.how


def dealing_refresh(
    *, study_id: int, annotator_ids: list[int] | None = None, depth: int = DEPTH
) -> int:
    """Recompute the rankings of the study's annotators (every active member
    past the warm-up, or those named). Returns how many were written. A study
    not dealt ``adaptive`` is left alone."""
    study = Study.objects.filter(pk=study_id).first()
    if study is None or study.dealing_policy != ADAPTIVE:
        return 0
    members = Participation.objects.filter(
        study=study, status=Participation.Status.ACTIVE, annotator__status="active"
    )
    if annotator_ids is not None:
        members = members.filter(annotator_id__in=annotator_ids)
    written = 0
    for annotator in Annotator.objects.filter(
        pk__in=members.values("annotator_id"), erased_at__isnull=True
    ).order_by("pk"):
        rated = annotator_rated(annotator_id=annotator.pk, study_id=study.pk)
        if rated < study.dealing_warmup:
            continue  # the claim deals fullest-first until then anyway
        ranked, uncertainty, version_id, how = dealing_rank(
            annotator=annotator, study=study, depth=depth
        )
        dealing_ranking_replace(
            study_id=study.pk,
            annotator_id=annotator.pk,
            ranked=ranked,
            uncertainty=uncertainty,
            version_id=version_id,
            how=how,
        )
        written += 1
    return written


def dealing_refresh_soon(*, study_id: int, annotator_id: int) -> bool:
    """Queue one annotator's refresh after commit, at most once per
    ``REFRESH_THROTTLE_S`` (per process's cache): the first rating of a window
    queues a refresh that runs at the window's end, so it sees that window's
    later ratings too. Returns whether one was queued."""
    from .tasks import dealing_refresh_task

    key = f"palate:dealing:{study_id}:{annotator_id}"
    if not cache.add(key, 1, timeout=REFRESH_THROTTLE_S):
        return False
    transaction.on_commit(
        lambda: dealing_refresh_task.apply_async(
            (study_id, [annotator_id]), countdown=REFRESH_THROTTLE_S
        )
    )
    return True


def dealing_after_training(*, study_id: int | None) -> list[int]:
    """After a training run: queue the refresh of every ``adaptive`` study the
    run's scope serves (its study, or every study for a global run). Returns
    the study ids queued."""
    studies = Study.objects.filter(dealing_policy=ADAPTIVE)
    if study_id is not None:
        studies = studies.filter(pk=study_id)
    ids = list(studies.values_list("pk", flat=True))
    from .tasks import dealing_refresh_task

    for sid in ids:
        transaction.on_commit(lambda sid=sid: dealing_refresh_task.delay(sid))
    return ids
