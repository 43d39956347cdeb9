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

The records are consumed as a stream (each record's image bytes dropped once
its image is stored, ratings written ``CHUNK`` at a time), so memory does not
grow with the dataset. A row with a bad field refuses the whole import (listed, nothing
written, image files removed again); an **image that cannot be read** (PAMELA's
hub viewer reports at least one PIL cannot load) is skipped with its ratings and
reported by its key, instead of aborting everything.
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


def _row_errors(r: RatingRecord, study: Study) -> list[str]:
    errors = []
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


def _external_id(dataset: str, rater: str) -> str:
    return f"{dataset}:{rater}"[:128]


class _Import:
    """One import's state while the records stream through: images and raters
    seen so far, the ratings not yet written, the errors, the unreadable
    images, and the files written (removed again if the import is refused)."""

    def __init__(self, study: Study, dataset: str):
        self.study, self.dataset = study, dataset
        self.by_sha = dict(
            Image.objects.filter(study=study).values_list("sha256", "pk")
        )
        self.images: dict[str, tuple[int, str] | None] = {}  # None: unreadable
        self.raters: dict[str, int] = {}
        self.existing = set(
            Rating.objects.filter(study=study).values_list("image_id", "annotator_id")
        )
        self.seen: set[tuple[int, int]] = set()
        self.pending: list[Rating] = []
        self.errors: list[str] = []
        self.unreadable: dict[str, str] = {}  # image key -> why
        self.files: list = []
        self.n = {"records": 0, "duplicates": 0, "created": 0, "skipped": 0}
        self.n.update(images_created=0, raters_created=0)

    def add(self, r: RatingRecord) -> None:
        self.n["records"] += 1
        errors = _row_errors(r, self.study)
        if errors or self.errors:  # after the first error only count the rest
            self.errors += errors
            return
        image = self._image(r)
        if image is None:
            self.n["skipped"] += 1
            return
        rater = str(r.rater).strip()
        pair = (image[0], self._rater(rater, r.demographics))
        if pair in self.existing or pair in self.seen:
            self.n["duplicates"] += pair in self.seen
            return
        self.seen.add(pair)
        split = r.split or split_assign(
            image_key=image[1],
            annotator_key=annotator_key(
                source="import",
                external_id=_external_id(self.dataset, rater),
                public_id="",
            ),
        )
        self.pending.append(
            Rating(
                study=self.study,
                image_id=pair[0],
                annotator_id=pair[1],
                score=int(r.score),
                split=split,
            )
        )
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        Rating.objects.bulk_create(self.pending, batch_size=CHUNK)
        self.n["created"] += len(self.pending)
        self.pending = []

    def _image(self, r: RatingRecord) -> tuple[int, str] | None:
        """(pk, sha256) of the record's image, created from the first record's
        bytes; None if its bytes cannot be read as an image (then skipped)."""
        if r.image_key in self.images:
            return self.images[r.image_key]
        try:
            # The stored image's hash (after intake normalisation, e.g. EXIF
            # orientation), so a re-import finds the image it created.
            sha = (
                r.image_sha256
                or image_inspect(
                    data=r.image_bytes, name=r.image_key or "imported"
                ).sha256
            )
        except InvalidInput as exc:
            self.unreadable[r.image_key] = exc.message
            self.images[r.image_key] = None
            return None
        if sha not in self.by_sha:
            if r.image_bytes is None:
                raise InvalidInput(f"row {r.line}: no image with sha256 {sha[:12]}…")
            meta = dict(r.image_meta)
            image = image_create(
                study=self.study,
                data=r.image_bytes,
                filename=r.image_key[-200:] or "imported",
                domain=str(meta.pop("domain", ""))[:60],
                provenance={"imported": True, **meta},
            )
            self.files.append(image.file)
            self.by_sha[sha] = image.pk
            self.n["images_created"] += 1
        self.images[r.image_key] = (self.by_sha[sha], sha)
        return self.images[r.image_key]

    def _rater(self, rater: str, demographics: dict) -> int:
        if rater in self.raters:
            return self.raters[rater]
        external_id = _external_id(self.dataset, rater)
        pk = (
            Annotator.objects.filter(source="import", external_id=external_id)
            .values_list("pk", flat=True)
            .first()
        )
        if pk is None:
            demo = {k: v for k, v in demographics.items() if v not in ("", None)}
            pk = annotator_create(
                source="import", external_id=external_id, demographics=demo
            ).pk
            self.n["raters_created"] += 1
        Participation.objects.bulk_create(
            [Participation(annotator_id=pk, study=self.study)], ignore_conflicts=True
        )
        self.raters[rater] = pk
        return pk

    def refuse_if_bad(self) -> None:
        if self.errors:
            extra = len(self.errors) - MAX_ERRORS_SHOWN
            more = f" (and {extra} more)" if extra > 0 else ""
            raise InvalidInput("; ".join(self.errors[:MAX_ERRORS_SHOWN]) + more)
        if not self.n["records"]:
            raise InvalidInput("The dataset has no ratings.")

    def remove_files(self) -> None:
        """The rows were rolled back: their files go too."""
        for f in self.files:
            f.storage.delete(f.name)

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
    *, study: Study, records: Iterable[RatingRecord], dataset: str
) -> dict:
    """Create the study ratings of a dataset (all or nothing, unreadable images
    skipped and reported), reading ``records`` as a stream. Returns counts."""
    if not dataset.strip():
        raise InvalidInput("A dataset name is needed (it scopes the rater ids).")
    state = _Import(study, dataset)
    try:
        with transaction.atomic():
            for r in records:  # one at a time: its image bytes go with it
                state.add(r)
            state.refuse_if_bad()
            state.flush()
            _counters_refresh(study)
    except BaseException:
        state.remove_files()
        raise
    return state.result()
