"""Training data: a snapshot of the ratings (and external scores) and its splits.

numpy and the ORM only. The snapshot leaves out invalid ratings and every rating
of an excluded annotator. Splits are seeded:

* annotators: a share is held out entirely ("unseen", evaluated k-shot);
* images: a share is held out ("test"); seen annotators are evaluated on their
  ratings of test images; unseen annotators adapt on ratings of train images
  (the support set) and are evaluated on test images too, so no test image is
  ever trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotation.models import Annotator, Rating

from .models import ExternalScore, ExternalSource


@dataclass
class Snapshot:
    image_ids: list[int]  # embedding rows 0..len-1 are these study images
    ext_item_rows: dict[int, int]  # external item id -> embedding row
    n_rows: int
    # Ratings of our annotators.
    r_row: np.ndarray
    r_ann: np.ndarray  # index into annotator_keys
    r_score: np.ndarray
    annotator_keys: list[str]  # str(pk) for annotators, "ext:<source>:<rater>"
    demographics: dict[str, dict]
    n_real_annotators: int  # the first n keys are real annotators
    # External population scores.
    e_row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    e_src: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    e_score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sources: list[dict] = field(default_factory=list)
    last_rating_id: int | None = None
    scale: tuple[float, float] = (1.0, 7.0)

    @property
    def counts(self) -> dict:
        return {
            "ratings": int(self.r_score.size),
            "images": len(self.image_ids),
            "annotators": self.n_real_annotators,
            "external_raters": len(self.annotator_keys) - self.n_real_annotators,
            "external_population_scores": int(self.e_score.size),
            "external_sources": len(self.sources),
        }


def ratings_queryset(*, study_id: int | None = None):
    qs = Rating.objects.filter(is_valid=True).exclude(
        annotator__status=Annotator.Status.EXCLUDED
    )
    if study_id is not None:
        qs = qs.filter(study_id=study_id)
    return qs


def snapshot_take(*, study_id: int | None = None) -> Snapshot:
    rows = list(
        ratings_queryset(study_id=study_id)
        .order_by("pk")
        .values_list("pk", "image_id", "annotator_id", "score")
    )
    image_ids = sorted({r[1] for r in rows})
    img_row = {img: i for i, img in enumerate(image_ids)}
    ann_pks = sorted({r[2] for r in rows})
    ann_idx = {pk: i for i, pk in enumerate(ann_pks)}
    demographics = {
        str(pk): demo or {}
        for pk, demo in Annotator.objects.filter(pk__in=ann_pks).values_list(
            "pk", "demographics"
        )
    }
    r_row = [img_row[r[1]] for r in rows]
    r_ann = [ann_idx[r[2]] for r in rows]
    r_score = [float(r[3]) for r in rows]
    keys = [str(pk) for pk in ann_pks]
    n_real = len(keys)

    sources_qs = ExternalSource.objects.order_by("pk")
    if study_id is not None:
        from django.db.models import Q

        sources_qs = sources_qs.filter(Q(study_id=study_id) | Q(study__isnull=True))
    sources = []
    ext_item_rows: dict[int, int] = {}
    n_rows = len(image_ids)
    e_row, e_src, e_score = [], [], []
    for source in sources_qs:
        scores = list(
            ExternalScore.objects.filter(item__source=source)
            .order_by("pk")
            .values_list("item_id", "item__image_id", "rater", "score")
        )
        if not scores:
            continue
        src_i = len(sources)
        sources.append(
            {
                "id": source.pk,
                "name": source.name,
                "kind": source.kind,
                "weight": source.weight,
                "scale": [source.scale_min, source.scale_max],
            }
        )
        for item_id, image_id, rater, score in scores:
            if item_id not in ext_item_rows:
                if image_id is not None and image_id in img_row:
                    ext_item_rows[item_id] = img_row[image_id]
                else:
                    ext_item_rows[item_id] = n_rows
                    n_rows += 1
            row = ext_item_rows[item_id]
            if rater:
                key = f"ext:{source.name}:{rater}"
                if key not in ann_idx:
                    ann_idx[key] = len(keys)
                    keys.append(key)
                r_row.append(row)
                r_ann.append(ann_idx[key])
                r_score.append(float(score))
            else:
                e_row.append(row)
                e_src.append(src_i)
                e_score.append(float(score))

    scale = (1.0, 7.0)
    if study_id is not None:
        from annotation.models import Study

        st = Study.objects.get(pk=study_id)
        scale = (float(st.scale_min), float(st.scale_max))
    return Snapshot(
        image_ids=image_ids,
        ext_item_rows=ext_item_rows,
        n_rows=n_rows,
        r_row=np.asarray(r_row, dtype=np.int64),
        r_ann=np.asarray(r_ann, dtype=np.int64),
        r_score=np.asarray(r_score, dtype=np.float64),
        annotator_keys=keys,
        demographics=demographics,
        n_real_annotators=n_real,
        e_row=np.asarray(e_row, dtype=np.int64),
        e_src=np.asarray(e_src, dtype=np.int64),
        e_score=np.asarray(e_score, dtype=np.float64),
        sources=sources,
        last_rating_id=rows[-1][0] if rows else None,
        scale=scale,
    )


@dataclass
class Split:
    seen: np.ndarray  # bool per annotator index
    test_row: np.ndarray  # bool per embedding row (only study images can be test)
    train: np.ndarray  # bool per rating
    seen_test: np.ndarray  # bool per rating
    unseen_support: np.ndarray  # bool per rating
    unseen_query: np.ndarray  # bool per rating


def split_make(
    snap: Snapshot,
    *,
    seed: int,
    test_images: float = 0.2,
    unseen_annotators: float = 0.15,
    min_annotators_for_unseen: int = 8,
) -> Split:
    rng = np.random.default_rng(seed)
    n_ann = len(snap.annotator_keys)
    seen = np.ones(n_ann, dtype=bool)
    n_real = snap.n_real_annotators
    if n_real >= min_annotators_for_unseen:
        n_unseen = max(1, int(round(unseen_annotators * n_real)))
        seen[rng.permutation(n_real)[:n_unseen]] = False
    n_img = len(snap.image_ids)
    test_row = np.zeros(snap.n_rows, dtype=bool)
    n_test = int(round(test_images * n_img))
    if n_img >= 5 and n_test:
        test_row[rng.permutation(n_img)[:n_test]] = True
    is_test = test_row[snap.r_row]
    ann_seen = seen[snap.r_ann]
    real = snap.r_ann < n_real
    return Split(
        seen=seen,
        test_row=test_row,
        train=ann_seen & ~is_test,
        seen_test=ann_seen & is_test & real,
        unseen_support=~ann_seen & ~is_test,
        unseen_query=~ann_seen & is_test,
    )


def normalisation(
    scores: np.ndarray, groups: np.ndarray, n_groups: int, *, min_std: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean and std (std floored: an annotator who always gives the
    same score must not blow up their targets)."""
    mean = np.zeros(n_groups)
    std = np.ones(n_groups)
    for g in range(n_groups):
        s = scores[groups == g]
        if s.size:
            mean[g] = s.mean()
            std[g] = max(float(s.std()), min_std) if s.size > 1 else 1.0
    return mean, std


def demographic_features(
    demographics: dict[str, dict],
    keys: list[str],
    *,
    vocab: list[str] | None = None,
    min_count: int = 2,
) -> tuple[np.ndarray, list[str]]:
    """One-hot ``field=value`` features; the vocabulary is built from the training
    annotators (values seen at least ``min_count`` times) and stored in the
    checkpoint so new annotators map onto the same columns."""

    def items(demo: dict) -> list[str]:
        return [f"{k}={v}" for k, v in sorted(demo.items()) if v not in ("", None)]

    if vocab is None:
        counts: dict[str, int] = {}
        for key in keys:
            for it in items(demographics.get(key, {})):
                counts[it] = counts.get(it, 0) + 1
        vocab = sorted(k for k, c in counts.items() if c >= min_count)
    col = {v: i for i, v in enumerate(vocab)}
    out = np.zeros((len(keys), max(len(vocab), 1)), dtype=np.float32)
    for i, key in enumerate(keys):
        for it in items(demographics.get(key, {})):
            if it in col:
                out[i, col[it]] = 1.0
    return out, vocab
