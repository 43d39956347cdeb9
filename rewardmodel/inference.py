"""Predictions for one annotator, served with numpy (torch is never imported here,
so the web process stays free of it; a test checks this in a subprocess).

``predict`` picks the version active for the images' study (else the global one),
loads its ``.npz`` checkpoint once per process and keeps, per version:

* the standardised embedding of every image asked about so far (flat array);
* the crowd: per image, the sum and count of everyone's normalised ratings,
  rebuilt every ``CROWD_TTL`` seconds (one query), with each annotator's own
  normalised ratings so their rating is left out of their own prediction. An
  image nobody else has rated (e.g. a candidate of prompt steering) gets the
  crowd feature expected from its content (``Model.crowd_expected``), not 0.

Annotators the version was fitted on use their head; anyone else gets a head
adapted in closed form from their current ratings (cold start: the newcomer
base head, chosen on validation), recomputed as soon as they rate again: the
cached head is keyed by their latest rating id and count, not by a timer.
Images without an embedding are reported as ``pending`` (the API queues them and
answers 202) instead of failing the request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from annotation.studies.models import Annotator
from core.exceptions import Conflict, NotFound

from . import posterior as P
from . import similar as S
from . import taste as T
from .models import ModelVersion

_LOCK = threading.Lock()
_LOADED: dict[tuple, Predictor] = {}
CROWD_TTL = 60.0
# Which version serves an image's study, remembered briefly: a promotion reaches
# every web process within this many seconds.
VERSION_TTL = 5.0
_VERSIONS: dict = {}
MAX_ADAPT_RATINGS = 2000
# Annotators whose head posterior a process keeps per version (``Predictor.live``;
# d × d floats each, about 0.5 MB at d = 258), least recently used dropped first:
# one dropped is rebuilt from all their ratings when next asked (about 10 ms of
# CPU for 500 ratings).
MAX_LIVE = 64


@dataclass
class Live:
    """One annotator's head posterior (``posterior.LivePosterior``), the stamp
    of the ratings in it (``Predictor._own_ratings``) and the crowd their
    features were read from; for a newcomer, the head served from it."""

    post: P.LivePosterior
    stamp: tuple
    crowd: object
    out: tuple | None = None

    def newcomer(self, model: T.Model) -> tuple:
        """(head, mean, std, how) adapted from these ratings (``Model.adapt``:
        their mean and std shrunk toward the global std, the posterior mean
        around the newcomer base; cold start without ratings)."""
        if self.out is None:
            self.out = _adapted(self.post, model)
        return self.out


def _adapted(post: P.LivePosterior, model: T.Model) -> tuple:
    if not post.n:
        m = model
        mean = float(np.mean(m.norm_mean[m.fitted])) if m.fitted.any() else 0.0
        return m.newcomer_base.astype(np.float32), mean, m.global_std, "cold start"
    y = np.asarray(post.scores)
    r = T.Ratings(np.zeros(y.size, np.int64), np.zeros(y.size, np.int64), y)
    mean, std = T.norm_stats(r, 1, fallback_std=model.global_std)
    m, s = float(mean[0]), float(std[0])
    head = (post.base + post.delta(m, s)).astype(np.float32)
    return head, m, s, f"adapted from {post.n} ratings"


@dataclass
class Predictor:
    version: ModelVersion
    model: T.Model
    index: dict[str, int]  # annotator key -> head row
    rows: dict[int, int] = field(default_factory=dict)  # image id -> cache row
    x: np.ndarray | None = None
    crowd: T.Crowd | None = None  # own ratings keyed by annotator pk
    crowd_built: float = 0.0
    # (annotator pk, fitted) -> their head posterior (``_live``).
    live: dict[tuple, Live] = field(default_factory=dict)
    similar: S.Served | None = None  # the similar crowd, where the version has it

    # --- images --------------------------------------------------------------

    def add_images(self, image_ids: list[int]) -> list[int]:
        """Cache the standardised embeddings of new images; returns the ids that
        have no embedding for this version's backbone yet."""
        from .embeddings import embedding_rows

        missing = set(image_ids).difference(self.rows.keys())
        if not missing:
            return []
        new = [i for i in dict.fromkeys(image_ids) if i in missing]
        found, vecs = embedding_rows(backbone=self.version.backbone, image_ids=new)
        if found:
            x = self.model.feat.x(vecs)
            base = 0 if self.x is None else self.x.shape[0]
            self.x = x if self.x is None else np.vstack([self.x, x])
            for j, i in enumerate(found):
                self.rows[i] = base + j
            self.crowd = None  # new rows: rebuild the crowd arrays
        have = set(found)
        return [i for i in new if i not in have]

    # --- the crowd -------------------------------------------------------------

    def crowd_now(self) -> T.Crowd:
        if self.crowd is None or time.monotonic() - self.crowd_built > CROWD_TTL:
            self.crowd = self._crowd_build()
            self.crowd_built = time.monotonic()
        return self.crowd

    def _crowd_build(self) -> T.Crowd:
        from .snapshot import ratings_queryset

        n = 0 if self.x is None else self.x.shape[0]
        qs = ratings_queryset(study_id=self.version.study_id).filter(
            image_id__in=list(self.rows)
        )
        data = list(qs.values_list("image_id", "annotator_id", "score"))
        if not data:
            return T.Crowd(np.zeros(n), np.zeros(n))
        img = np.fromiter((self.rows[d[0]] for d in data), np.int64, len(data))
        pks = np.fromiter((d[1] for d in data), np.int64, len(data))
        score = np.fromiter((d[2] for d in data), np.float64, len(data))
        uniq, ann = np.unique(pks, return_inverse=True)
        mean, std = T.norm_stats(
            T.Ratings(img, ann, score), uniq.size, fallback_std=self.model.global_std
        )
        for j, pk in enumerate(uniq):
            i = self.index.get(str(pk))
            if i is not None and self.model.fitted[i]:
                mean[j], std[j] = self.model.norm_mean[i], self.model.norm_std[i]
        r = T.Ratings(img, ann, score)
        keys = [int(pk) for pk in uniq]
        return T.Crowd.build(r, T.normalised(r, mean, std), n, keys=keys)

    def _fit_ratings(self, annotator_pk: int) -> S.TrainIndex:
        """Of the ratings the version was fitted on (up to its run's last
        rating; those that stopped counting since left out, as from the
        crowd): the annotator's and everyone else's on the same images, what
        their agreements read. Two indexed queries."""
        from .snapshot import ratings_queryset

        qs = ratings_queryset(study_id=self.version.study_id)
        last = getattr(self.version.training_run, "last_rating_id", None)
        if last is not None:
            qs = qs.filter(pk__lte=last)
        # Their images first, then everyone's ratings of them (by the image
        # index; one query with a subquery planned a scan of the study, ~0.2 s).
        theirs = list(qs.filter(annotator_id=annotator_pk).values_list("image_id"))
        data = qs.filter(image_id__in=[t[0] for t in theirs]).values_list(
            "image_id", "annotator_id", "score"
        )
        return S.train_index(list(data), self.model, self.index)

    def crowd_feature(self, rows: np.ndarray, annotator_pk: int) -> np.ndarray:
        """The crowd feature of cache rows ``rows`` as this annotator sees it
        (``crowd.Crowd``; an image nobody else rated: the expected crowd)."""
        return self.crowd_now().of_annotator(annotator_pk, rows, fill=self._fill)

    def _fill(self, rows: np.ndarray) -> np.ndarray:
        return self.model.crowd_expected(self.x[rows])

    # --- heads -----------------------------------------------------------------

    def head(self, annotator: Annotator) -> tuple[np.ndarray, float, float, str]:
        """(head, mean, std, how) for this annotator."""
        i = self.index.get(str(annotator.pk))
        if i is not None and self.model.fitted[i]:
            m = self.model
            return m.heads[i], float(m.norm_mean[i]), float(m.norm_std[i]), "trained"
        return self._live(annotator, fitted=False).newcomer(self.model)

    def _own_ratings(self, annotator: Annotator, *, fitted: bool) -> tuple:
        """(ratings, stamp, complete): (image id, score) of the annotator's
        ratings that have an embedding, newest first (for a fitted annotator
        those the version was trained on, up to the run's last rating; else
        their latest ``MAX_ADAPT_RATINGS``), the ids of the ratings read (the
        key of what was computed from them: a new rating, or one that stops
        counting, changes it, so the next prediction reflects it at once; no
        timer), and whether every one had an embedding. One indexed query."""
        from .snapshot import ratings_queryset

        qs = ratings_queryset(study_id=self.version.study_id).filter(
            annotator=annotator
        )
        if fitted:
            last = getattr(self.version.training_run, "last_rating_id", None)
            if last is not None:
                qs = qs.filter(pk__lte=last)
        got = list(
            qs.order_by("-pk").values_list("pk", "image_id", "score")[
                :MAX_ADAPT_RATINGS
            ]
        )
        stamp = tuple(r[0] for r in got)
        self.add_images([r[1] for r in got])
        usable = [r[1:] for r in got if r[1] in self.rows]
        return usable, stamp, len(usable) == len(got)

    def _live(self, annotator: Annotator, *, fitted: bool) -> Live:
        """The annotator's head posterior given their ratings now (fitted: those
        the version was trained on), kept with the stamp of those ratings and
        the crowd their features were read from. Ratings added since (the new
        stamp ends with the kept one) are folded into it in O(d²) each;
        anything else (a rating that stopped counting, the crowd rebuilt, the
        oldest rating past ``MAX_ADAPT_RATINGS``) starts it over from all of
        them. Not kept while a rating's embedding is missing; at most
        ``MAX_LIVE`` annotators kept."""
        ratings, stamp, complete = self._own_ratings(annotator, fitted=fitted)
        crowd = self.crowd_now()
        key = (annotator.pk, fitted)
        live = self.live.get(key)
        new = len(stamp) - (0 if live is None else len(live.stamp))
        if live is not None and live.crowd is crowd and complete and new >= 0:
            self.live[key] = self.live.pop(key)  # the most recently used last
            if new == 0 and stamp == live.stamp:
                return live
            if new > 0 and stamp[new:] == live.stamp:
                self._fold(live, annotator, ratings[:new])
                live.stamp = stamp
                return live
        zero = self.model.spread(
            np.zeros((0, self.model.w0.size)),
            fitted=fitted,
            index=self.index.get(str(annotator.pk)),
        )
        start = P.LivePosterior.start(zero.prior, zero.tau2, self.model.newcomer_base)
        live = Live(start, stamp, crowd)
        self._fold(live, annotator, ratings)
        if complete:
            self.live.pop(key, None)
            self.live[key] = live
            while len(self.live) > MAX_LIVE:
                self.live.pop(next(iter(self.live)))
        return live

    def _fold(self, live: Live, annotator: Annotator, ratings: list) -> None:
        """Add ratings (image, score), newest first, to ``live``."""
        if not ratings:
            return
        rows = np.asarray([self.rows[r[0]] for r in ratings[::-1]], dtype=np.int64)
        crowd = live.crowd.of_annotator(annotator.pk, rows, fill=self._fill)
        f = T.Features.full(self.x[rows], crowd)
        live.post.add(f, np.asarray([r[1] for r in ratings[::-1]], np.float64))
        live.out = None

    def spread(self, annotator: Annotator, image_ids: list[int]) -> np.ndarray:
        """Posterior sd of the annotator's own part of each prediction, on their
        scale (``posterior.LivePosterior``, the state their head is read from):
        how much their ratings pin down their taste on these images. From at
        most ``MAX_ADAPT_RATINGS`` of their ratings (the latest), so for someone
        with more it errs wide. The similar crowd (``similar.Served``) is not
        in it: that term sits outside the head, from the others' ratings."""
        i = self.index.get(str(annotator.pk))
        fitted = i is not None and bool(self.model.fitted[i])
        live = self._live(annotator, fitted=fitted)
        rows = np.fromiter(
            map(self.rows.__getitem__, image_ids), np.int64, len(image_ids)
        )
        g = T.Features.full(self.x[rows], self.crowd_feature(rows, annotator.pk))
        if fitted:
            std = float(self.model.norm_std[i])
        else:
            std = live.newcomer(self.model)[2]
        return std * live.post.sd(g)

    # --- scoring ---------------------------------------------------------------

    def scores(self, annotator: Annotator, image_ids: list[int]) -> tuple:
        head, mean, std, how = self.head(annotator)
        rows = np.fromiter(
            map(self.rows.__getitem__, image_ids), np.int64, len(image_ids)
        )
        crowd = self.crowd_feature(rows, annotator.pk)
        head = np.asarray(head, dtype=np.float32)
        norm = T.forward(self.x, crowd, head, rows=rows)  # the one forward pass
        sim, w = self.similar, 0.0  # outside the head; newcomers: weight 0
        if sim is not None and how == "trained":
            w = self.model.hyper.blend_similar[self.index[str(annotator.pk)]]
        if w:
            now = self.crowd_now()
            norm = norm + w * sim.term(now, annotator.pk, rows, self._fit_ratings)
        return mean + std * norm, how


def _single_threaded_blas() -> None:
    """A web process serves many requests side by side: one BLAS thread each
    (an oversubscribed BLAS pool turned a 0.3 ms product into tens of ms)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def load(version: ModelVersion) -> Predictor:
    # Keyed by the checkpoint too: a version id alone may name another model in
    # another database (tests, restores).
    key = (version.pk, version.checkpoint_path, version.checkpoint_sha256)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        from .checkpoint import checkpoint_load

        if not _LOADED:
            _single_threaded_blas()
        try:
            model, keys, _ = checkpoint_load(version.checkpoint_path)
        except ValueError as exc:
            raise Conflict(
                f"v{version.pk} cannot be served: {exc} Train a new version."
            ) from None
        pred = Predictor(
            version=version, model=model, index={k: i for i, k in enumerate(keys)}
        )
        if model.similar is not None:
            agree = model.similar.keyed({int(k): i for i, k in enumerate(keys)})
            pred.similar = S.Served(agree, keep=MAX_LIVE)
        if len(_LOADED) >= 4:  # a few studies' versions at a time per process
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = pred
        return pred


def version_for(
    *,
    image_ids: list[int],
    annotator: Annotator | None = None,
    version: ModelVersion | None = None,
):
    """The given version; else the one active for the images' study; else the one
    active for a study the annotator takes part in (images kept in a companion
    study, e.g. prompt steering's candidates), newest promotion first; else the
    global active one."""
    if version is not None:
        return version
    from .selectors import version_active

    hit = _VERSIONS.get(image_ids[0] if image_ids else None)
    if hit is not None and time.monotonic() - hit[1] < VERSION_TTL:
        return hit[0]
    found = (
        ModelVersion.objects.filter(is_active=True, study__images=image_ids[0]).first()
        if image_ids
        else None
    )
    if found is not None:
        if len(_VERSIONS) > 10_000:
            _VERSIONS.clear()
        _VERSIONS[image_ids[0]] = (found, time.monotonic())
        return found
    if found is None and annotator is not None:
        found = (
            ModelVersion.objects.filter(
                is_active=True, study__participations__annotator=annotator
            )
            .order_by("-promoted_at", "-pk")
            .first()
        )
    found = found or version_active(study=None)
    if found is None:
        raise Conflict("No active reward model version yet: train one first.")
    return found


def version_cache_clear() -> None:
    """Forget which version serves which study (this process; others within
    ``VERSION_TTL``)."""
    _VERSIONS.clear()


def predict(
    *,
    annotator: Annotator,
    image_ids: list[int],
    version: ModelVersion | None = None,
    spread: bool = False,
) -> dict:
    """Predicted scores on the annotator's own scale, for the images that have an
    embedding; the others are listed under ``pending``. With ``spread``, also the
    posterior sd of the annotator's own part of each score (``Predictor.spread``)."""
    ids = [int(i) for i in image_ids]
    version = version_for(image_ids=ids, annotator=annotator, version=version)
    pred = load(version)
    with _LOCK:
        pending = set(pred.add_images(ids))
        ready = [i for i in ids if i not in pending] if pending else ids
        values, how = pred.scores(annotator, ready) if ready else ([], "")
        sds = pred.spread(annotator, ready) if spread and ready else []
    out = {
        "version": version.pk,
        "backbone": version.backbone,
        "annotator": annotator.pk,
        "how": how,
        "scores": dict(zip(ready, np.asarray(values).tolist(), strict=True)),
        "pending": [i for i in ids if i in pending] if pending else [],
    }
    if spread:
        out["spread"] = dict(zip(ready, np.asarray(sds).tolist(), strict=True))
    return out


def rank(
    *, annotator: Annotator, image_ids: list[int], version: ModelVersion | None = None
) -> list[tuple[int, float]]:
    """Images best first for this annotator (those with an embedding)."""
    result = predict(annotator=annotator, image_ids=image_ids, version=version)
    return sorted(result["scores"].items(), key=lambda kv: -kv[1])


def annotator_get(pk: int) -> Annotator:
    """The annotator to predict for; an erased one is gone (their ratings are
    kept only as invalid records, and their head was removed)."""
    try:
        return Annotator.objects.get(pk=pk, erased_at__isnull=True)
    except Annotator.DoesNotExist:
        raise NotFound(f"No annotator {pk}.") from None


@dataclass
class Posterior:
    """What ranking images by information needs (``rewardmodel.dealing``): the
    posterior covariance Σ of the annotator's own head δ_a (normalised units,
    feature space: ``posterior.LivePosterior``, the state ``spread`` and a
    newcomer's head are read from) given **every** rating they have given in
    the version's study, and the features of the images asked about that have
    an embedding, in the order asked."""

    image_ids: list[int]
    features: np.ndarray
    cov: np.ndarray  # (d, d) Σ
    std: float  # their scale: normalised units -> their scores
    how: str
    rated: int  # the ratings Σ is conditioned on

    def sd(self) -> np.ndarray:
        """Posterior sd of f · δ_a for each image asked about."""
        return P.row_sd(self.cov, self.features)


def posterior(
    *, annotator: Annotator, image_ids: list[int], version: ModelVersion | None = None
) -> Posterior:
    """The annotator's head posterior under the version serving these images and
    the images' features. Σ is the live one (``Predictor._live``: kept per
    annotator, O(d²) per new rating, no n_a × n_a decomposition): for a newcomer
    from their ratings now; for a fitted annotator from the ratings the version
    was trained on, then conditioned on those they gave since. What a rating
    teaches about δ_a does not depend on its score in this linear Gaussian
    model, so conditioning on the later ratings is exact before the next
    training run, and a ranking refreshed between runs does not keep asking
    about what they have just rated."""
    from .snapshot import ratings_queryset

    ids = [int(i) for i in image_ids]
    version = version_for(image_ids=ids, annotator=annotator, version=version)
    pred = load(version)
    since: list[int] = []
    i = pred.index.get(str(annotator.pk))
    fitted = i is not None and bool(pred.model.fitted[i])
    last = getattr(version.training_run, "last_rating_id", None)
    if fitted and last is not None:
        since = list(
            ratings_queryset(study_id=version.study_id)
            .filter(annotator=annotator, pk__gt=last)
            .order_by("-pk")
            .values_list("image_id", flat=True)[:MAX_ADAPT_RATINGS]
        )
    with _LOCK:
        pending = set(pred.add_images(ids + since))
        ready = [i for i in ids if i not in pending]
        if not ready:
            raise Conflict("None of these images has an embedding yet.")
        live = pred._live(annotator, fitted=fitted)
        cov = live.post.cov.copy()  # the kept state stays the version's
        later = np.asarray([pred.rows[r] for r in since if r in pred.rows], np.int64)
        if later.size and live.post.tau2 > 0:
            f = T.Features.full(pred.x[later], pred.crowd_feature(later, annotator.pk))
            P.conditioned(cov, f)
        rows = np.asarray([pred.rows[r] for r in ready], dtype=np.int64)
        g = T.Features.full(pred.x[rows], pred.crowd_feature(rows, annotator.pk))
        _, _, std, how = pred.head(annotator)
    return Posterior(ready, g, cov, float(std), how, live.post.n + int(later.size))
