"""Import a Palate dataset export (``export_dataset``, any format) into a study:
the images (byte for byte), the annotators (same pseudonymous ids, the
demographics the study asks for), the ratings with their scores, times and
stored splits. The inverse of ``export``, so that an export round-trips.

Everything is checked before anything is written (a clear message, nothing
changed), then written in one transaction; image files stored before a failure
are deleted again.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.exceptions import InvalidInput

from ..models import DEMOGRAPHIC_FIELDS, Annotator, Image, Participation, Rating, Study
from ..splits import SPLITS
from .studies import image_create

ProgressFn = Callable[[str, int, int], None]
BATCH = 2000


def _detect_format(root: Path) -> str:
    for fmt in ("parquet", "jsonl", "csv"):
        if any((root / "ratings" / "data").glob(f"*.{fmt}")):
            return fmt
    raise InvalidInput(
        f"{root} is not a Palate dataset export: no ratings/data/*.parquet, "
        "*.jsonl or *.csv."
    )


def _files(root: Path, config: str, fmt: str) -> list[Path]:
    files = sorted((root / config / "data").glob(f"*.{fmt}"))
    if not files:
        raise InvalidInput(f"The export has no {config} table ({config}/data/).")
    return files


def _rows(path: Path, fmt: str) -> Iterator[dict]:
    """Rows of one file as dicts, a batch at a time (memory stays bounded)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            yield from batch.to_pylist()
    elif fmt == "jsonl":
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InvalidInput(f"{path.name} line {n}: {exc}") from None
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            yield from csv.DictReader(fh)


def _int(v, name: str, where: str, *, optional: bool = False) -> int | None:
    if v is None or v == "":
        if optional:
            return None
        raise InvalidInput(f"{where}: {name} is missing.")
    try:
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: {name} {v!r} is not an integer.") from None


def _bool(v) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in {"true", "1", "yes"}


def _when(v, where: str) -> datetime:
    if isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{where}: created_at {v!r} is not a date-time.") from None


@dataclass
class _Plan:
    fmt: str
    images: list[dict]
    annotators: dict[str, dict]
    ratings: list[dict]


def _image_data(root: Path, row: dict, fmt: str, where: str) -> bytes:
    value = row.get("image")
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if not value:
        raise InvalidInput(
            "The export carries no images (exported with --images none); export "
            "again with images embedded or as files."
        )
    path = (root / value).resolve()
    if root.resolve() not in path.parents or not path.is_file():
        raise InvalidInput(f"{where}: image file {value} is not in the export.")
    return path.read_bytes()


def _read_images(root: Path, fmt: str) -> list[dict]:
    images, seen = [], set()
    for path in _files(root, "images", fmt):
        for n, row in enumerate(_rows(path, fmt), 1):
            where = f"images/{path.name} row {n}"
            image_id = _int(row.get("image_id"), "image_id", where)
            if image_id in seen:
                raise InvalidInput(f"{where}: image_id {image_id} appears twice.")
            seen.add(image_id)
            try:
                provenance = json.loads(row.get("provenance") or "{}")
            except json.JSONDecodeError:
                raise InvalidInput(f"{where}: provenance is not JSON.") from None
            if "image" not in row:
                raise InvalidInput(
                    "The export carries no images (exported with --images none); "
                    "export again with images embedded or as files."
                )
            images.append(
                {
                    "id": image_id,
                    "where": where,
                    "path": path,
                    "index": n,
                    "sha256": row.get("sha256") or "",
                    "prompt": row.get("prompt") or "",
                    "domain": row.get("domain") or "",
                    "provenance": provenance if isinstance(provenance, dict) else {},
                }
            )
    return images


def _read_annotators(root: Path, fmt: str, study: Study) -> dict[str, dict]:
    asked = [f for f in (study.demographics_fields or []) if f in DEMOGRAPHIC_FIELDS]
    out = {}
    for path in _files(root, "annotators", fmt):
        for n, row in enumerate(_rows(path, fmt), 1):
            pid = str(row.get("annotator_id") or "")
            if not pid or len(pid) > 32:
                raise InvalidInput(f"annotators/{path.name} row {n}: bad annotator_id.")
            out[pid] = {
                "excluded": _bool(row.get("excluded", False)),
                "demographics": {
                    f: str(row[f])[:100] for f in asked if row.get(f) not in (None, "")
                },
            }
    return out


def _read_ratings(root: Path, fmt: str, study: Study, plan: _Plan) -> list[dict]:
    image_ids = {i["id"] for i in plan.images}
    pairs, ratings = set(), []
    for path in _files(root, "ratings", fmt):
        for n, row in enumerate(_rows(path, fmt), 1):
            where = f"ratings/{path.name} row {n}"
            image_id = _int(row.get("image_id"), "image_id", where)
            pid = str(row.get("annotator_id") or "")
            score = _int(row.get("score"), "score", where)
            split = row.get("split") or path.name.split("-")[0]
            if split not in SPLITS:
                raise InvalidInput(f"{where}: unknown split {split!r}.")
            if image_id not in image_ids:
                raise InvalidInput(
                    f"{where}: image {image_id} is not in the images table."
                )
            if pid not in plan.annotators:
                raise InvalidInput(
                    f"{where}: annotator {pid!r} is not in the annotators table."
                )
            if not study.scale_min <= score <= study.scale_max:
                raise InvalidInput(
                    f"{where}: score {score} is outside the study's scale "
                    f"{study.scale_min}–{study.scale_max}."
                )
            if (image_id, pid) in pairs:
                raise InvalidInput(
                    f"{where}: annotator {pid} rated image {image_id} twice."
                )
            pairs.add((image_id, pid))
            ratings.append(
                {
                    "image": image_id,
                    "annotator": pid,
                    "score": score,
                    "time_on_item_ms": _int(
                        row.get("time_on_item_ms"),
                        "time_on_item_ms",
                        where,
                        optional=True,
                    ),
                    "created_at": _when(row.get("created_at"), where),
                    "split": split,
                    "is_valid": _bool(row.get("is_valid", True)),
                }
            )
    return ratings


def _check_capacity(study: Study, plan: _Plan) -> None:
    valid: dict[int, int] = {}
    for r in plan.ratings:
        if r["is_valid"]:
            valid[r["image"]] = valid.get(r["image"], 0) + 1
    over = {i: n for i, n in valid.items() if n > study.raters_per_image}
    if over:
        image_id, n = next(iter(sorted(over.items())))
        raise InvalidInput(
            f"Image {image_id} has {n} valid ratings, more than the study's "
            f"raters_per_image ({study.raters_per_image}); {len(over)} image(s) in "
            "all. Import into a study with more raters per image."
        )


def dataset_plan(*, study: Study, root: Path | str) -> _Plan:
    """Read and check the whole export; raises InvalidInput, writes nothing."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder.")
    fmt = _detect_format(root)
    plan = _Plan(fmt=fmt, images=_read_images(root, fmt), annotators={}, ratings=[])
    plan.annotators = _read_annotators(root, fmt, study)
    plan.ratings = _read_ratings(root, fmt, study, plan)
    for r in plan.ratings:  # excluded in the export: nothing of theirs counts here
        if plan.annotators.get(r["annotator"], {}).get("excluded"):
            r["is_valid"] = False
    if not plan.ratings:
        raise InvalidInput("The export has no ratings.")
    erased = list(
        Annotator.objects.filter(
            public_id__in=list(plan.annotators), erased_at__isnull=False
        ).values_list("public_id", flat=True)[:5]
    )
    if erased:
        raise InvalidInput(
            f"Annotator(s) {', '.join(sorted(erased))} were erased on this instance "
            "(the right to be forgotten): their ratings cannot be imported again."
        )
    if Image.objects.filter(study=study).exists():
        raise InvalidInput(
            f"Study '{study.slug}' already has images: import into a new study."
        )
    _check_capacity(study, plan)
    return plan


def _image_bytes(root: Path, plan: _Plan) -> Iterator[tuple[dict, bytes]]:
    """Each planned image with its bytes, reading the table again in order (one
    image in memory at a time)."""
    by_file: dict[Path, list[dict]] = {}
    for img in plan.images:
        by_file.setdefault(img["path"], []).append(img)
    for path, wanted in by_file.items():
        rows = _rows(path, plan.fmt)
        for n, row in enumerate(rows, 1):
            img = wanted[0]
            if img["index"] != n:
                continue
            wanted.pop(0)
            yield img, _image_data(root, row, plan.fmt, img["where"])
            if not wanted:
                break


def _annotators_upsert(study: Study, plan: _Plan) -> dict[str, Annotator]:
    """The same pseudonymous ids: an annotator already here under that id (a
    re-import on the same instance) is reused; others are created."""
    from .studies import annotator_create

    existing = {
        a.public_id: a
        for a in Annotator.objects.filter(public_id__in=list(plan.annotators))
    }
    out = {}
    for pid, info in sorted(plan.annotators.items()):
        annotator = existing.get(pid)
        if annotator is None:
            annotator = Annotator.objects.filter(
                source="import", external_id=pid
            ).first()
        if annotator is None:
            annotator = annotator_create(
                source="import", external_id=pid, demographics=info["demographics"]
            )
            Annotator.objects.filter(pk=annotator.pk).update(public_id=pid)
            annotator.refresh_from_db()
        elif info["demographics"]:
            merged = {**info["demographics"], **(annotator.demographics or {})}
            Annotator.objects.filter(pk=annotator.pk).update(demographics=merged)
        # Demographics in an export are the consented ones: the participation
        # records that consent, so a re-export carries them again.
        # Excluded in the exported study: excluded from this study (their
        # participation), not from the others the same id takes part in.
        excluded = (
            {"status": Participation.Status.EXCLUDED, "excluded_at": timezone.now()}
            if info["excluded"]
            else {}
        )
        Participation.objects.update_or_create(
            annotator=annotator,
            study=study,
            defaults=excluded,
            create_defaults={
                **excluded,
                **(
                    {"consented_at": plan_consent_time(plan, pid)}
                    if info["demographics"]
                    else {}
                ),
            },
        )
        out[pid] = annotator
    return out


def plan_consent_time(plan: _Plan, pid: str) -> datetime:
    """The annotator's first rating time stands for when they consented."""
    return min(r["created_at"] for r in plan.ratings if r["annotator"] == pid)


def dataset_import(
    *, study: Study, root: Path | str, on_progress: ProgressFn | None = None
) -> dict:
    """Import an export folder into ``study`` (which must have no images yet)."""
    root = Path(root)
    plan = dataset_plan(study=study, root=root)
    total = len(plan.images) + len(plan.ratings)
    done = 0
    stored: list[Image] = []
    try:
        with transaction.atomic():
            ids: dict[int, int] = {}
            for img, data in _image_bytes(root, plan):
                image = image_create(
                    study=study,
                    data=data,
                    filename=f"{img['sha256'] or img['id']}.img",
                    prompt=img["prompt"],
                    domain=img["domain"],
                    provenance=img["provenance"],
                )
                stored.append(image)
                if img["sha256"] and image.sha256 != img["sha256"]:
                    raise InvalidInput(
                        f"{img['where']}: the image bytes do not match its sha256."
                    )
                ids[img["id"]] = image.pk
                done += 1
                if on_progress:
                    on_progress("images", done, total)
            annotators = _annotators_upsert(study, plan)
            done = _ratings_create(
                study, plan, ids, annotators, done, total, on_progress
            )
    except BaseException:
        for image in stored:
            image.file.delete(save=False)
        raise
    return {
        "study": study.slug,
        "format": plan.fmt,
        "images": len(plan.images),
        "annotators": len(plan.annotators),
        "ratings": len(plan.ratings),
        "splits": {s: sum(r["split"] == s for r in plan.ratings) for s in SPLITS},
    }


def _ratings_create(study, plan, ids, annotators, done, total, on_progress) -> int:
    for start in range(0, len(plan.ratings), BATCH):
        chunk = plan.ratings[start : start + BATCH]
        objs = [
            Rating(
                study=study,
                image_id=ids[r["image"]],
                annotator=annotators[r["annotator"]],
                score=r["score"],
                time_on_item_ms=r["time_on_item_ms"],
                is_valid=r["is_valid"],
                split=r["split"],
            )
            for r in chunk
        ]
        created = Rating.objects.bulk_create(objs, batch_size=BATCH)
        # created_at is auto_now_add: restore the dataset's times afterwards.
        for obj, r in zip(created, chunk, strict=True):
            obj.created_at = r["created_at"]
        Rating.objects.bulk_update(created, ["created_at"], batch_size=500)
        done += len(chunk)
        if on_progress:
            on_progress("ratings", done, total)
    counts: dict[int, int] = {}
    for r in plan.ratings:
        if r["is_valid"]:
            counts[ids[r["image"]]] = counts.get(ids[r["image"]], 0) + 1
    for image_id, n in sorted(counts.items()):
        Image.objects.filter(pk=image_id).update(rating_count=F("rating_count") + n)
    return done
