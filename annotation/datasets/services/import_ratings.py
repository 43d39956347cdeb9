"""Importing a per-annotator ratings dataset as real study ratings.

Each record is one rating: a rater id, an integer score on the study's scale, the
image (bytes, or an existing study image's sha256), optional demographics of the
rater, optional image metadata, and optionally the split the dataset published
(PAMELA's train / val_seen / ...), which is kept; without one the rating gets the
split its keys hash to (the image's sha256 and ``import:<dataset>:<rater>``), like
any rating (``annotation.splits``): the same file gives the same splits in any
database.

Imported raters become annotators (``source="import"``, external id
``<dataset>:<rater>``, at most 128 characters: a longer one is refused, never
cut short) who take part in the study, so every path that works for live
annotators (training, evaluation, prediction, export) works for them. They are
scoped to the dataset name, never a live participant; one excluded since keeps
getting invalid ratings, one erased cannot be imported again.

All or nothing: one transaction writes while the records are checked; a bad
record refuses the whole import (listed with its file, line and field, at most
five), and the image files are journalled (``media_journal``), so none outlives a
failed or killed import.
Re-importing the same data changes nothing: existing (image, annotator) pairs
are skipped. Image counters are set from the rows in the same transaction; an
image with more imported ratings than the study's target gets its target raised
to that count (the CHECK constraint still holds).

The records are consumed as a stream (each record's image bytes dropped once
its image is stored, ratings written ``CHUNK`` at a time), so memory does not
grow with the dataset. An **image that cannot be read** refuses the import like
any bad record, unless ``skip_unreadable_images`` (PAMELA's layout: its hub
viewer reports at least one image PIL cannot load): then it is skipped with its
ratings and reported by its key, instead of aborting everything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Greatest

from annotation.datasets.services.media_journal import media_journal
from annotation.models import Annotator, Image, Participation, Rating, Study
from annotation.participants.services.erasure import identifiers_erased
from annotation.splits import SPLITS, annotator_key, split_assign
from annotation.studies.images import image_inspect
from annotation.studies.services.studies import annotator_create, image_create
from core.exceptions import InvalidInput

MAX_ERRORS_SHOWN = 5
EXTERNAL_ID_CHARS = 128  # Annotator.external_id
RATER_CHARS = 120
CHUNK = 2000  # ratings per write


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


def _where(r: RatingRecord) -> str:
    return r.where or f"row {r.line}"


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


def _row_errors(r: RatingRecord, study: Study, dataset: str) -> list[str]:
    errors = []
    where = _where(r)
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


class _Import:
    """One import's state while the records stream through: images and raters
    seen so far, the ratings not yet written, the errors, the erased raters met
    and the unreadable images skipped."""

    def __init__(self, study: Study, dataset: str, *, journal, skip_unreadable: bool):
        self.study, self.dataset, self.journal = study, dataset, journal
        self.skip_unreadable = skip_unreadable
        self.by_sha = dict(
            Image.objects.filter(study=study).values_list("sha256", "pk")
        )
        self.images: dict[str, tuple[int, str] | None] = {}  # None: unreadable
        self.raters: dict[str, tuple[int, bool] | None] = {}  # None: erased
        self.existing = set(
            Rating.objects.filter(study=study).values_list("image_id", "annotator_id")
        )
        self.seen: set[tuple[int, int]] = set()
        self.pending: list[Rating] = []
        self.errors: list[str] = []
        self.erased: list[str] = []
        self.unreadable: dict[str, str] = {}  # image key -> why
        self.n = {"records": 0, "duplicates": 0, "created": 0, "skipped": 0}
        self.n.update(images_created=0, raters_created=0)

    def add(self, r: RatingRecord) -> None:
        self.n["records"] += 1
        self.errors += _row_errors(r, self.study, self.dataset)
        if self.errors:  # after the first error only check the rest
            return
        rater = str(r.rater).strip()
        who = self._rater(rater, r.demographics)
        if who is None or self.erased:  # refused at the end: write no more
            return
        image = self._image(r)
        if image is None:
            self.n["skipped"] += 1
            return
        pair = (image[0], who[0])
        if pair in self.existing or pair in self.seen:
            self.n["duplicates"] += pair in self.seen
            return
        self.seen.add(pair)
        key = annotator_key(
            source="import", external_id=f"{self.dataset}:{rater}", public_id=""
        )
        self.pending.append(
            Rating(
                study=self.study,
                image_id=pair[0],
                annotator_id=pair[1],
                score=int(r.score),
                is_valid=who[1],
                split=r.split or split_assign(image_key=image[1], annotator_key=key),
            )
        )
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        Rating.objects.bulk_create(self.pending, batch_size=CHUNK)
        self.n["created"] += len(self.pending)
        self.pending = []

    def _stored_sha(self, r: RatingRecord) -> str | None:
        """The stored image's hash (after intake normalisation, e.g. EXIF
        orientation), so a re-import finds the image it created; None for an
        unreadable image that is skipped."""
        if r.image_sha256:
            return r.image_sha256
        try:
            return image_inspect(
                data=r.image_bytes, name=r.image_key or "imported"
            ).sha256
        except InvalidInput as exc:
            if not self.skip_unreadable:
                raise InvalidInput(f"{_where(r)}: {exc.message}") from None
            self.unreadable[r.image_key] = exc.message
            return None

    def _image(self, r: RatingRecord) -> tuple[int, str] | None:
        """(pk, sha256) of the record's image, created from the first record's
        bytes; None if it is unreadable and skipped."""
        if r.image_key in self.images:
            return self.images[r.image_key]
        sha = self._stored_sha(r)
        if sha is None:
            self.images[r.image_key] = None
            return None
        if sha not in self.by_sha:
            if r.image_bytes is None:
                raise InvalidInput(f"{_where(r)}: no image with sha256 {sha[:12]}…")
            meta = dict(r.image_meta)
            image = image_create(
                study=self.study,
                data=r.image_bytes,
                filename=r.image_key[-200:] or "imported",
                domain=str(meta.pop("domain", ""))[:60],
                provenance={"imported": True, **meta},
                journal=self.journal,
            )
            self.by_sha[sha] = image.pk
            self.n["images_created"] += 1
        self.images[r.image_key] = (self.by_sha[sha], sha)
        return self.images[r.image_key]

    def _rater(self, rater: str, demographics: dict) -> tuple[int, bool] | None:
        """(annotator pk, may rate validly) of an import-scoped rater, created
        on first sight; None for one erased on this instance (refused)."""
        if rater in self.raters:
            return self.raters[rater]
        external_id = f"{self.dataset}:{rater}"
        a = Annotator.objects.filter(source="import", external_id=external_id).first()
        if (a is not None and a.erased_at is not None) or identifiers_erased(
            [external_id]
        ):
            self.erased.append(rater)
            self.raters[rater] = None
            return None
        if a is None:
            demo = {k: v for k, v in demographics.items() if v not in ("", None)}
            a = annotator_create(
                source="import", external_id=external_id, demographics=demo
            )
            self.n["raters_created"] += 1
        Participation.objects.bulk_create(
            [Participation(annotator_id=a.pk, study=self.study)],
            ignore_conflicts=True,
        )
        self.raters[rater] = (a.pk, a.status != Annotator.Status.EXCLUDED)
        return self.raters[rater]

    def refuse_if_bad(self) -> None:
        if self.errors:
            extra = len(self.errors) - MAX_ERRORS_SHOWN
            more = f" (and {extra} more)" if extra > 0 else ""
            raise InvalidInput("; ".join(self.errors[:MAX_ERRORS_SHOWN]) + more)
        if self.erased:
            raise InvalidInput(
                f"Rater(s) {', '.join(sorted(self.erased)[:5])} of dataset "
                f"'{self.dataset}' were erased on this instance (the right to be "
                "forgotten): they cannot be imported again."
            )
        if not self.n["records"]:
            raise InvalidInput("The dataset has no ratings.")

    def result(self) -> dict:
        n = self.n
        return {
            "ratings_created": n["created"],
            "ratings_already_there": n["records"]
            - n["created"]
            - n["duplicates"]
            - n["skipped"],
            "duplicate_rows_skipped": n["duplicates"],
            "images_created": n["images_created"],
            "images": len({v[0] for v in self.images.values() if v}),
            "annotators_created": n["raters_created"],
            "annotators": len(self.raters),
            "unreadable_images_skipped": len(self.unreadable),
            "unreadable_images": sorted(self.unreadable),
            "ratings_skipped_unreadable_image": n["skipped"],
        }


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
    *,
    study: Study,
    records: Iterable[RatingRecord],
    dataset: str,
    skip_unreadable_images: bool = False,
) -> dict:
    """Create the study ratings of a dataset (all or nothing; unreadable images
    refused, or skipped and reported with ``skip_unreadable_images``), reading
    ``records`` as a stream. Returns counts."""
    if not dataset.strip():
        raise InvalidInput("A dataset name is needed (it scopes the rater ids).")
    with media_journal() as journal, transaction.atomic():
        state = _Import(
            study, dataset, journal=journal, skip_unreadable=skip_unreadable_images
        )
        for r in records:  # one at a time: its image bytes go with it
            state.add(r)
        state.refuse_if_bad()
        state.flush()
        _counters_refresh(study)
    return state.result()
