"""Importing a per-annotator ratings dataset as real study ratings.

Each record is one rating: a rater id, an integer score on the study's scale, the
image (bytes, or an existing study image's sha256), optional demographics of the
rater, optional image metadata, and optionally the split the dataset published
(PAMELA's train / val_seen / ...), which is kept; without one the rating gets the
split it hashes to, like any rating (``annotation.splits``).

Imported raters become annotators (``source="import"``, external id
``<dataset>:<rater>``, at most 128 characters: a longer one is refused, never
cut short) who take part in the study, so every path that works for live
annotators (training, evaluation, prediction, export) works for them. They are
scoped to the dataset name, never a live participant; one excluded since keeps
getting invalid ratings, one erased cannot be imported again.

All or nothing: every record is checked first, then one transaction writes; the
image files are journalled (``media_journal``), so none outlives a failed or
killed import.
Re-importing the same data changes nothing: existing (image, annotator) pairs
are skipped. Image counters are set from the rows in the same transaction; an
image with more imported ratings than the study's target gets its target raised
to that count (the CHECK constraint still holds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Greatest

from core.exceptions import InvalidInput

from ..images import image_inspect
from ..models import Annotator, Image, Participation, Rating, Study
from ..splits import SPLITS, split_assign
from .media_journal import media_journal
from .studies import annotator_create, image_create

MAX_ERRORS_SHOWN = 5
EXTERNAL_ID_CHARS = 128  # Annotator.external_id
RATER_CHARS = 120


@dataclass
class RatingRecord:
    rater: str
    score: object
    image_key: str  # identifies the image within the dataset
    image_bytes: bytes | None = None
    image_sha256: str = ""
    demographics: dict = field(default_factory=dict)
    image_meta: dict = field(default_factory=dict)
    split: str = ""
    line: int = 0
    where: str = ""  # file and line, for messages


def _score_problem(score, study: Study) -> str | None:
    if isinstance(score, bool) or not isinstance(score, int | float):
        return f"score {str(score)[:40]!r} is not a number"
    if not math.isfinite(score):
        return f"score {score} is not a finite number"
    if score != int(score):
        return f"score {score} is not a whole number"
    if not study.scale_min <= score <= study.scale_max:
        return (
            f"score {score:g} outside the study's scale "
            f"{study.scale_min}–{study.scale_max}"
        )
    return None


def _check(records: list[RatingRecord], study: Study, dataset: str) -> list[str]:
    errors = []
    for r in records:
        where = r.where or f"row {r.line}"
        rater = str(r.rater).strip()
        if not rater:
            errors.append(f"{where}: no rater id")
        elif "\x00" in rater:
            errors.append(f"{where}: rater id contains a NUL character")
        elif len(f"{dataset}:{rater}") > EXTERNAL_ID_CHARS:
            errors.append(
                f"{where}: rater id is {len(rater)} characters; with the dataset "
                f"name it must fit in {EXTERNAL_ID_CHARS}"
            )
        problem = _score_problem(r.score, study)
        if problem:
            errors.append(f"{where}: {problem}")
        if r.image_bytes is None and not r.image_sha256:
            errors.append(f"{where}: no image")
        if r.split and r.split not in SPLITS:
            errors.append(f"{where}: unknown split {r.split[:40]!r}")
    return errors


def _stored_sha(r: RatingRecord) -> str:
    try:
        return image_inspect(data=r.image_bytes, name=r.image_key or "imported").sha256
    except InvalidInput as exc:
        raise InvalidInput(f"{r.where or f'row {r.line}'}: {exc.message}") from None


def _images(study: Study, records: list[RatingRecord], journal) -> tuple[dict, int]:
    """Image per image key (created once from the first record's bytes)."""
    by_sha = dict(Image.objects.filter(study=study).values_list("sha256", "pk"))
    out: dict[str, int] = {}
    created = 0
    for r in records:
        if r.image_key in out:
            continue
        # The stored image's hash (after intake normalisation, e.g. EXIF
        # orientation), so a re-import finds the image it created.
        sha = r.image_sha256 or _stored_sha(r)
        if sha not in by_sha:
            if r.image_bytes is None:
                raise InvalidInput(
                    f"{r.where or f'row {r.line}'}: no image with sha256 {sha[:12]}…"
                )
            meta = dict(r.image_meta)
            image = image_create(
                study=study,
                data=r.image_bytes,
                filename=r.image_key[-200:] or "imported",
                domain=str(meta.pop("domain", ""))[:60],
                provenance={"imported": True, **meta},
                journal=journal,
            )
            by_sha[sha] = image.pk
            created += 1
        out[r.image_key] = by_sha[sha]
    return out, created


def _annotators(study: Study, records: list[RatingRecord], dataset: str) -> tuple:
    """Rater id → (annotator pk, may rate validly). Refuses erased ones."""
    wanted: dict[str, dict] = {}
    for r in records:
        wanted.setdefault(str(r.rater).strip(), r.demographics)
    ext = {f"{dataset}:{rater}": rater for rater in wanted}
    have = {
        a.external_id: a
        for a in Annotator.objects.filter(source="import", external_id__in=list(ext))
    }
    erased = sorted(ext[e] for e, a in have.items() if a.erased_at is not None)
    if erased:
        raise InvalidInput(
            f"Rater(s) {', '.join(erased[:5])} of dataset '{dataset}' were erased on "
            "this instance (the right to be forgotten): they cannot be imported again."
        )
    out: dict[str, tuple[int, bool]] = {}
    created = 0
    for external_id, rater in ext.items():
        if external_id not in have:
            demo = {k: v for k, v in wanted[rater].items() if v not in ("", None)}
            have[external_id] = annotator_create(
                source="import", external_id=external_id, demographics=demo
            )
            created += 1
        a = have[external_id]
        out[rater] = (a.pk, a.status != Annotator.Status.EXCLUDED)
    Participation.objects.bulk_create(
        [Participation(annotator_id=pk, study=study) for pk, _ in out.values()],
        ignore_conflicts=True,
    )
    return out, created


def _counters_refresh(study: Study) -> None:
    valid = (
        Rating.objects.filter(image=OuterRef("pk"), is_valid=True)
        .order_by()
        .values("image")
        .annotate(n=Count("pk"))
        .values("n")
    )
    n = Coalesce(Subquery(valid, output_field=IntegerField()), Value(0))
    Image.objects.filter(study=study).update(
        rating_count=n,
        target_ratings=Greatest(F("target_ratings"), n + F("lease_count")),
    )


def ratings_import(
    *, study: Study, records: Iterable[RatingRecord], dataset: str
) -> dict:
    """Create the study ratings of a dataset (all or nothing). Returns counts."""
    records = list(records)
    if not records:
        raise InvalidInput("The dataset has no ratings.")
    if not dataset.strip():
        raise InvalidInput("A dataset name is needed (it scopes the rater ids).")
    errors = _check(records, study, dataset)
    if errors:
        more = (
            f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > 5 else ""
        )
        raise InvalidInput("; ".join(errors[:MAX_ERRORS_SHOWN]) + more)
    with media_journal() as journal, transaction.atomic():
        raters, raters_created = _annotators(study, records, dataset)
        images, images_created = _images(study, records, journal)
        rows, duplicates = _rating_rows(study, records, images, raters)
        Rating.objects.bulk_create(rows, batch_size=5000)
        _counters_refresh(study)
    return {
        "ratings_created": len(rows),
        "ratings_already_there": len(records) - len(rows) - duplicates,
        "duplicate_rows_skipped": duplicates,
        "images_created": images_created,
        "images": len(set(images.values())),
        "annotators_created": raters_created,
        "annotators": len(raters),
    }


def _rating_rows(study, records, images, raters) -> tuple[list[Rating], int]:
    existing = set(
        Rating.objects.filter(study=study).values_list("image_id", "annotator_id")
    )
    rows, seen, duplicates = [], set(), 0
    for r in records:
        annotator_id, valid = raters[str(r.rater).strip()]
        pair = (images[r.image_key], annotator_id)
        if pair in existing or pair in seen:
            duplicates += pair in seen
            continue
        seen.add(pair)
        rows.append(
            Rating(
                study=study,
                image_id=pair[0],
                annotator_id=pair[1],
                score=int(r.score),
                is_valid=valid,
                split=r.split
                or split_assign(
                    study_id=study.pk, image_id=pair[0], annotator_id=pair[1]
                ),
            )
        )
    return rows, duplicates
