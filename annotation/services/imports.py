"""Importing a per-annotator ratings dataset as real study ratings.

Each record is one rating: a rater id, an integer score on the study's scale, the
image (bytes, or an existing study image's sha256), optional demographics of the
rater, optional image metadata, and optionally the split the dataset published
(PAMELA's train / val_seen / ...), which is kept; without one the rating gets the
split its keys hash to (the image's sha256 and ``import:<dataset>:<rater>``), like
any rating (``annotation.splits``): the same file gives the same splits in any
database.

Imported raters become annotators (``source="import"``, external id
``<dataset>:<rater>``) who take part in the study, so every path that works for
live annotators (training, evaluation, prediction, export) works for them.
Re-importing the same data changes nothing: existing (image, annotator) pairs
are skipped. Image counters are set from the rows in the same transaction; an
image with more imported ratings than the study's target gets its target raised
to that count (the CHECK constraint still holds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Greatest

from core.exceptions import InvalidInput

from ..images import image_inspect
from ..models import Annotator, Image, Participation, Rating, Study
from ..splits import SPLITS, annotator_key, split_assign
from .studies import annotator_create, image_create

MAX_ERRORS_SHOWN = 5


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


def _check(records: list[RatingRecord], study: Study) -> list[str]:
    errors = []
    for r in records:
        where = f"row {r.line}"
        if not str(r.rater).strip():
            errors.append(f"{where}: no rater id")
        if isinstance(r.score, bool) or not isinstance(r.score, int | float):
            errors.append(f"{where}: score {r.score!r} is not a number")
        elif r.score != int(r.score):
            errors.append(f"{where}: score {r.score} is not a whole number")
        elif not study.scale_min <= r.score <= study.scale_max:
            errors.append(
                f"{where}: score {r.score:g} outside the study's scale "
                f"{study.scale_min}–{study.scale_max}"
            )
        if r.image_bytes is None and not r.image_sha256:
            errors.append(f"{where}: no image")
        if r.split and r.split not in SPLITS:
            errors.append(f"{where}: unknown split {r.split!r}")
    return errors


def _stored_sha(r: RatingRecord) -> str:
    try:
        return image_inspect(data=r.image_bytes, name=r.image_key or "imported").sha256
    except InvalidInput as exc:
        raise InvalidInput(f"row {r.line}: {exc.message}") from None


def _images(study: Study, records: list[RatingRecord]) -> tuple[dict, int]:
    """(image pk, sha256) per image key (created once from the first record's
    bytes)."""
    by_sha = dict(Image.objects.filter(study=study).values_list("sha256", "pk"))
    out: dict[str, tuple[int, str]] = {}
    created = 0
    for r in records:
        if r.image_key in out:
            continue
        # The stored image's hash (after intake normalisation, e.g. EXIF
        # orientation), so a re-import finds the image it created.
        sha = r.image_sha256 or _stored_sha(r)
        if sha not in by_sha:
            if r.image_bytes is None:
                raise InvalidInput(f"row {r.line}: no image with sha256 {sha[:12]}…")
            meta = dict(r.image_meta)
            image = image_create(
                study=study,
                data=r.image_bytes,
                filename=r.image_key[-200:] or "imported",
                domain=str(meta.pop("domain", ""))[:60],
                provenance={"imported": True, **meta},
            )
            by_sha[sha] = image.pk
            created += 1
        out[r.image_key] = (by_sha[sha], sha)
    return out, created


def _external_id(dataset: str, rater: str) -> str:
    return f"{dataset}:{rater}"[:128]


def _annotators(study: Study, records: list[RatingRecord], dataset: str) -> tuple:
    wanted: dict[str, dict] = {}
    for r in records:
        wanted.setdefault(str(r.rater).strip(), r.demographics)
    ext = {_external_id(dataset, rater): rater for rater in wanted}
    have = dict(
        Annotator.objects.filter(
            source="import", external_id__in=list(ext)
        ).values_list("external_id", "pk")
    )
    out: dict[str, int] = {}
    created = 0
    for external_id, rater in ext.items():
        if external_id not in have:
            demo = {k: v for k, v in wanted[rater].items() if v not in ("", None)}
            a = annotator_create(
                source="import", external_id=external_id, demographics=demo
            )
            have[external_id] = a.pk
            created += 1
        out[rater] = have[external_id]
    Participation.objects.bulk_create(
        [Participation(annotator_id=pk, study=study) for pk in out.values()],
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
    errors = _check(records, study)
    if errors:
        more = (
            f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > 5 else ""
        )
        raise InvalidInput("; ".join(errors[:MAX_ERRORS_SHOWN]) + more)
    with transaction.atomic():
        images, images_created = _images(study, records)
        raters, raters_created = _annotators(study, records, dataset)
        existing = set(
            Rating.objects.filter(study=study).values_list("image_id", "annotator_id")
        )
        rows, seen, duplicates = [], set(), 0
        for r in records:
            image_pk, sha = images[r.image_key]
            rater = str(r.rater).strip()
            pair = (image_pk, raters[rater])
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
                    split=r.split
                    or split_assign(
                        image_key=sha,
                        annotator_key=annotator_key(
                            source="import",
                            external_id=_external_id(dataset, rater),
                            public_id="",
                        ),
                    ),
                )
            )
        Rating.objects.bulk_create(rows, batch_size=5000)
        _counters_refresh(study)
    return {
        "ratings_created": len(rows),
        "ratings_already_there": len(records) - len(rows) - duplicates,
        "duplicate_rows_skipped": duplicates,
        "images_created": images_created,
        "images": len({pk for pk, _ in images.values()}),
        "annotators_created": raters_created,
        "annotators": len(raters),
    }
