"""Training data: a snapshot of the ratings, their stored splits, and external
population scores. numpy and the ORM only.

Ratings come through ``annotation.selectors.ratings_in_split`` (valid ratings of
non-excluded annotators) with the split each rating was given when it was written
(``annotation.splits``); nothing here draws a split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

import numpy as np
from django.db.models import Q

from annotation import splits
from annotation.engine.models import Rating
from annotation.engine.selectors import ratings_in_split
from annotation.studies.models import Annotator, Study

from .evaluation import CODES
from .models import ExternalScore, ExternalSource


@dataclass
class Snapshot:
    image_ids: list[int]  # embedding rows 0..len-1 are these study images
    ext_item_rows: dict[int, int]  # external item id -> embedding row
    n_rows: int
    r_row: np.ndarray
    r_ann: np.ndarray  # index into annotator_keys
    r_score: np.ndarray
    r_split: np.ndarray  # split code (evaluation.CODES)
    annotator_keys: list[str]  # str(annotator pk), in the order of their keys
    # External population scores (one mean score per item and source).
    e_row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    e_src: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    e_score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sources: list[dict] = field(default_factory=list)
    last_rating_id: int | None = None
    # Rating ids, in the order of the r_* arrays (what was new since a version).
    r_id: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scale: tuple[float, float] = (1.0, 7.0)

    @property
    def counts(self) -> dict:
        per_split = np.bincount(self.r_split, minlength=len(splits.SPLITS))
        return {
            "ratings": int(self.r_score.size),
            "images": len(self.image_ids),
            "annotators": len(self.annotator_keys),
            "external_population_scores": int(self.e_score.size),
            "external_sources": len(self.sources),
            **{f"ratings_{name}": int(per_split[i]) for name, i in CODES.items()},
        }


def ratings_queryset(*, study_id: int | None = None):
    """Valid ratings of non-excluded annotators (one study, or all)."""
    if study_id is not None:
        return ratings_in_split(study=study_id, split=splits.SPLITS)
    return Rating.objects.filter(is_valid=True).exclude(
        annotator__status=Annotator.Status.EXCLUDED
    )


# Ratings are read in chunks of this many rows straight into arrays: the
# snapshot never holds one Python tuple per rating (a million of them, with
# their image's sha256 and annotator's keys, took about 1 GB).
READ_CHUNK = 50_000


def snapshot_take(*, study_id: int | None = None) -> Snapshot:
    """The ratings in an order fixed by keys the data carries (the image's
    sha256 and study slug, the annotator's ``split_key``), never by database
    ids: the same ratings give the same rows, annotator order, seeded draws and
    so the same model in any database and after any re-import."""
    qs = ratings_queryset(study_id=study_id)
    pk, img, ann, score, split = _rating_arrays(qs)
    # The keys once per image and per annotator, not once per rating.
    img_key = {
        i: (sha, slug)
        for i, sha, slug in qs.order_by()
        .values_list("image_id", "image__sha256", "study__slug")
        .distinct()
    }
    ann_key = {
        a: splits.annotator_key(source=src, external_id=ext, public_id=pub)
        for a, src, ext, pub in qs.order_by()
        .values_list(
            "annotator_id",
            "annotator__source",
            "annotator__external_id",
            "annotator__public_id",
        )
        .distinct()
    }
    image_ids = sorted(img_key, key=img_key.__getitem__)
    ann_pks = sorted(ann_key, key=ann_key.__getitem__)
    r_row = _positions(img, image_ids)
    r_ann = _positions(ann, ann_pks)
    # Stable: ratings with equal keys keep the order they were read in.
    order = np.lexsort((r_row, r_ann))
    snap = Snapshot(
        image_ids=image_ids,
        ext_item_rows={},
        n_rows=len(image_ids),
        r_row=r_row[order],
        r_ann=r_ann[order],
        r_score=score[order].astype(np.float64),
        r_split=split[order],
        annotator_keys=[str(a) for a in ann_pks],
        last_rating_id=int(pk.max()) if pk.size else None,
        r_id=pk[order],
    )
    if study_id is not None:
        st = Study.objects.get(pk=study_id)
        snap.scale = (float(st.scale_min), float(st.scale_max))
    img_row = {img: i for i, img in enumerate(image_ids)}
    _add_external(snap, study_id=study_id, img_row=img_row)
    return snap


def _rating_arrays(qs) -> list[np.ndarray]:
    """(pk, image id, annotator id, score, split code) of every rating of
    ``qs`` as int64 arrays, read ``READ_CHUNK`` rows at a time."""
    parts: list[list[np.ndarray]] = [[], [], [], [], []]
    rows = qs.values_list("pk", "image_id", "annotator_id", "score", "split")
    it = rows.iterator(chunk_size=READ_CHUNK)
    while chunk := list(islice(it, READ_CHUNK)):
        cols = list(zip(*chunk, strict=True))
        cols[4] = [CODES[s] for s in cols[4]]
        for part, col in zip(parts, cols, strict=True):
            part.append(np.asarray(col, dtype=np.int64))
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts]


def _positions(ids: np.ndarray, ordered: list[int]) -> np.ndarray:
    """The position of each of ``ids`` in ``ordered`` (every id is in it)."""
    order = np.asarray(ordered, dtype=np.int64)
    if not order.size:
        return np.zeros(ids.size, dtype=np.int64)
    sort = np.argsort(order, kind="stable")
    return sort[np.searchsorted(order[sort], ids)]


def _add_external(snap: Snapshot, *, study_id: int | None, img_row: dict) -> None:
    """External population scores: each item maps onto a study image's row or a
    row of its own (embedded from its file)."""
    # Ordered by what the data names (source name, item key), not by ids, like
    # the ratings: the same data gives the same rows in any database.
    sources_qs = ExternalSource.objects.filter(
        kind=ExternalSource.Kind.POPULATION
    ).order_by("name", "pk")
    if study_id is not None:
        sources_qs = sources_qs.filter(Q(study_id=study_id) | Q(study__isnull=True))
    e_row, e_src, e_score = [], [], []
    for source in sources_qs:
        scores = list(
            ExternalScore.objects.filter(item__source=source, rater="")
            .order_by("item__key", "pk")
            .values_list("item_id", "item__image_id", "score")
        )
        if not scores:
            continue
        snap.sources.append(
            {
                "id": source.pk,
                "name": source.name,
                "weight": source.weight,
                "scale": [source.scale_min, source.scale_max],
            }
        )
        for item_id, image_id, score in scores:
            if item_id not in snap.ext_item_rows:
                if image_id is not None and image_id in img_row:
                    snap.ext_item_rows[item_id] = img_row[image_id]
                else:
                    snap.ext_item_rows[item_id] = snap.n_rows
                    snap.n_rows += 1
            e_row.append(snap.ext_item_rows[item_id])
            e_src.append(len(snap.sources) - 1)
            e_score.append(float(score))
    snap.e_row = np.asarray(e_row, dtype=np.int64)
    snap.e_src = np.asarray(e_src, dtype=np.int64)
    snap.e_score = np.asarray(e_score, dtype=np.float64)
