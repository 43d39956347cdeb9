"""Import a Palate dataset export (``export_dataset``, any format) into a study:
the images (byte for byte), the raters, the ratings with their scores, times and
stored splits. The inverse of ``export``, so that an export round-trips.

The file is not trusted. Its annotator ids name nobody here: each becomes a new
annotator scoped to this import (``source=import``, external id
``study<pk>:<id>``), keeping the id as its public id only where no one here has
it. Ratings go to an existing person only where the staff member says so
(``annotator_map``, ``same_annotators``). Nothing imported makes an excluded or
erased person's rating valid.

Everything is read and checked before anything is written (a clear message
naming the file, line and field; nothing changed), then read again and written
in one transaction, in bounded batches (memory flat); image files are journalled
(``media_journal``): none outlives a failed import. Caps: docs/export.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.datasets.services import import_input as check
from annotation.datasets.services.import_batches import (
    rating_counts_set,
    ratings_create,
)
from annotation.datasets.services.media_journal import media_journal
from annotation.models import (
    DEMOGRAPHIC_FIELDS,
    Annotator,
    Image,
    Participation,
    Study,
)
from annotation.participants.services.erasure import identifiers_erased
from annotation.splits import SPLITS
from annotation.studies.services.studies import image_create
from core.exceptions import InvalidInput

ProgressFn = Callable[[str, int, int], None]
PUBLIC_ID_CHARS = 32


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


def _rows(root: Path, path: Path, columns=None) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` of one table file (``where``: file and line)."""
    label = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    return check.table_rows(path, label=label, columns=columns)


@dataclass
class _Plan:
    """What the import writes, without the ratings (read twice: checked and
    counted, then written in batches; memory stays flat, issue 29): ``valid``
    counts each export image's valid ratings, ``first_rating`` is each export
    annotator's first rating time (it stands for their consent)."""

    fmt: str
    images: list[dict]
    annotators: dict[str, dict]
    ratings: int = 0
    valid: dict[int, int] = field(default_factory=dict)
    first_rating: dict[str, datetime] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)


NO_IMAGES = (
    "The export carries no images (exported with --images none); export again "
    "with images embedded or as files."
)


def _image_data(root: Path, row: dict, where: str) -> bytes:
    value = row.get("image")
    limit = settings.PALATE_MAX_UPLOAD_BYTES
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            if not isinstance(data, bytes | bytearray):
                raise InvalidInput(f"{where}: image bytes are not binary.")
            if len(data) > limit:
                raise InvalidInput(f"{where}: image is over the {limit}-byte limit.")
            return bytes(data)
        value = value.get("path")
    if not value:
        raise InvalidInput(NO_IMAGES)
    path = check.inside(root, value, where=where, field="image")
    return check.file_bytes(path, where=where, max_bytes=limit)


def _image_row(row: dict, where: str) -> dict:
    image_id = _int(row.get("image_id"), "image_id", where)
    sha = check.clean_text(row.get("sha256"), field="sha256", where=where, max_chars=64)
    if sha and not all(c in "0123456789abcdef" for c in sha):
        raise InvalidInput(f"{where}: sha256 is not 64 hex digits.")
    return {
        "id": image_id,
        "sha256": sha,
        "prompt": check.clean_text(
            row.get("prompt"),
            field="prompt",
            where=where,
            max_chars=check.MAX_PROMPT_CHARS,
        ),
        "domain": check.clean_text(
            row.get("domain"), field="domain", where=where, max_chars=60
        ),
        "provenance": check.json_object(
            row.get("provenance"), field="provenance", where=where
        ),
    }


def _int(v, name: str, where: str, *, optional: bool = False) -> int | None:
    return check.whole_number(
        v, field=name, where=where, lo=1, hi=2**63 - 1, optional=optional
    )


IMAGE_FIELDS = ("image_id", "sha256", "prompt", "domain", "provenance")


def _read_images(root: Path, fmt: str) -> list[dict]:
    images, seen = [], set()
    for path in _files(root, "images", fmt):
        names = check.table_columns(path)
        if names is not None and "image" not in names:
            raise InvalidInput(NO_IMAGES)
        columns = IMAGE_FIELDS if names is not None else None
        for n, (where, row) in enumerate(_rows(root, path, columns), 1):
            if names is None and "image" not in row:
                raise InvalidInput(NO_IMAGES)
            image = _image_row(row, where)
            if image["id"] in seen:
                raise InvalidInput(f"{where}: image_id {image['id']} appears twice.")
            seen.add(image["id"])
            images.append({**image, "where": where, "path": path, "index": n})
    return images


def _read_annotators(root: Path, fmt: str, study: Study) -> dict[str, dict]:
    asked = [f for f in (study.demographics_fields or []) if f in DEMOGRAPHIC_FIELDS]
    out = {}
    for path in _files(root, "annotators", fmt):
        for where, row in _rows(root, path):
            pid = check.clean_id(
                row.get("annotator_id"),
                field="annotator_id",
                where=where,
                max_chars=PUBLIC_ID_CHARS,
            )
            if pid in out:
                raise InvalidInput(f"{where}: annotator_id {pid} appears twice.")
            demographics = {}
            for f in asked:
                value = check.clean_text(
                    row.get(f), field=f, where=where, max_chars=check.MAX_TEXT_CHARS
                )
                if value:
                    demographics[f] = value
            out[pid] = {
                "excluded": check.truthy(
                    row.get("excluded", False), field="excluded", where=where
                ),
                "demographics": demographics,
            }
    return out


def _rating_row(row: dict, where: str, path: Path, study: Study, plan) -> dict:
    image_id = _int(row.get("image_id"), "image_id", where)
    pid = check.clean_id(
        row.get("annotator_id"),
        field="annotator_id",
        where=where,
        max_chars=PUBLIC_ID_CHARS,
    )
    score = check.whole_number(
        row.get("score"), field="score", where=where, lo=-(2**15), hi=2**15 - 1
    )
    split = row.get("split") or path.name.split("-")[0]
    if split not in SPLITS:
        raise InvalidInput(f"{where}: unknown split {str(split)[:40]!r}.")
    if pid not in plan.annotators:
        raise InvalidInput(
            f"{where}: annotator {pid!r} is not in the annotators table."
        )
    if not study.scale_min <= score <= study.scale_max:
        raise InvalidInput(
            f"{where}: score {score} is outside the study's scale "
            f"{study.scale_min}–{study.scale_max}."
        )
    return {
        "image": image_id,
        "annotator": pid,
        "score": score,
        "time_on_item_ms": check.time_on_item(row.get("time_on_item_ms"), where=where),
        "created_at": check.aware_datetime(
            row.get("created_at"), field="created_at", where=where
        ),
        "split": split,
        "is_valid": check.truthy(
            row.get("is_valid", True), field="is_valid", where=where
        ),
    }


def _ratings(root: Path, fmt: str, study: Study, plan: _Plan) -> Iterator[dict]:
    """Every rating row, checked, in file order; a rating of an annotator who is
    excluded (in the file, or here) is invalid."""
    for path in _files(root, "ratings", fmt):
        for where, row in _rows(root, path):
            r = _rating_row(row, where, path, study, plan)
            if plan.annotators[r["annotator"]]["excluded"]:
                r["is_valid"] = False
            yield {**r, "where": where}


def _read_ratings(root: Path, fmt: str, study: Study, plan: _Plan) -> None:
    """Check every rating and count what the write needs (no rating is kept:
    a pair is remembered as one integer)."""
    image_ids = {i["id"] for i in plan.images}
    number = {pid: k for k, pid in enumerate(plan.annotators)}
    pairs: set[int] = set()
    for r in _ratings(root, fmt, study, plan):
        where = r["where"]
        if r["image"] not in image_ids:
            raise InvalidInput(
                f"{where}: image {r['image']} is not in the images table."
            )
        pair = r["image"] * len(number) + number[r["annotator"]]
        if pair in pairs:
            raise InvalidInput(
                f"{where}: annotator {r['annotator']} rated image {r['image']} twice."
            )
        pairs.add(pair)
        plan.ratings += 1
        plan.splits[r["split"]] = plan.splits.get(r["split"], 0) + 1
        if r["is_valid"]:
            plan.valid[r["image"]] = plan.valid.get(r["image"], 0) + 1
        first = plan.first_rating.get(r["annotator"])
        if r["created_at"] and (first is None or r["created_at"] < first):
            plan.first_rating[r["annotator"]] = r["created_at"]


def _check_capacity(study: Study, plan: _Plan) -> None:
    over = {i: n for i, n in plan.valid.items() if n > study.raters_per_image}
    if over:
        image_id, n = next(iter(sorted(over.items())))
        raise InvalidInput(
            f"Image {image_id} has {n} valid ratings, more than the study's "
            f"raters_per_image ({study.raters_per_image}); {len(over)} image(s) in "
            "all. Import into a study with more raters per image."
        )


def _identities(
    study: Study, plan: _Plan, annotator_map: dict[str, str], same: bool
) -> None:
    """Decide who each file id becomes here (no writes): an existing person only
    where staff mapped them; otherwise a new import-scoped identity. Excluded or
    erased people's ratings are never valid."""
    unknown = sorted(set(annotator_map) - set(plan.annotators))
    if unknown:
        raise InvalidInput(
            f"--map-annotator names {unknown[0]!r}, which is not in the export."
        )
    if len(set(annotator_map.values())) < len(annotator_map):
        raise InvalidInput("--map-annotator maps two export ids to one person.")
    wanted = {
        pid: annotator_map.get(pid, pid if same else None) for pid in plan.annotators
    }
    here = {
        a.public_id: a
        for a in Annotator.objects.filter(
            public_id__in=[*plan.annotators, *filter(None, wanted.values())]
        )
    }
    erased = sorted(
        {p for p, a in here.items() if a.erased_at and p in plan.annotators}
        | identifiers_erased(plan.annotators)
    )
    if erased:
        raise InvalidInput(
            f"Annotator(s) {', '.join(erased[:5])} were erased on this instance "
            "(the right to be forgotten): their ratings cannot be imported again."
        )
    for pid, info in plan.annotators.items():
        target = here.get(wanted[pid]) if wanted[pid] else None
        if wanted[pid] and annotator_map.get(pid) and target is None:
            raise InvalidInput(f"--map-annotator {pid}: no annotator {wanted[pid]!r}.")
        if target is not None and target.erased_at is not None:
            raise InvalidInput(f"--map-annotator {pid}: that person was erased.")
        info["target"] = target
        info["public_id"] = None if target or pid in here else pid
        if target is not None:
            info["excluded"] = (
                info["excluded"] or target.status == Annotator.Status.EXCLUDED
            )


def dataset_plan(
    *,
    study: Study,
    root: Path | str,
    annotator_map: dict[str, str] | None = None,
    same_annotators: bool = False,
) -> _Plan:
    """Read and check the whole export; raises InvalidInput, writes nothing."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder.")
    fmt = _detect_format(root)
    plan = _Plan(fmt=fmt, images=_read_images(root, fmt), annotators={})
    plan.annotators = _read_annotators(root, fmt, study)
    # Who each rater becomes (excluded or not) before their ratings stream past.
    _identities(study, plan, annotator_map or {}, same_annotators)
    _read_ratings(root, fmt, study, plan)
    if not plan.ratings:
        raise InvalidInput("The export has no ratings.")
    if Image.objects.filter(study=study).exists():
        raise InvalidInput(
            f"Study '{study.slug}' already has images: import into a new study."
        )
    _check_capacity(study, plan)
    return plan


def _image_bytes(root: Path, plan: _Plan) -> Iterator[tuple[dict, bytes]]:
    """Each planned image with its bytes, reading the table again in order (one
    image in memory at a time)."""
    for path in dict.fromkeys(img["path"] for img in plan.images):
        wanted = {img["index"]: img for img in plan.images if img["path"] == path}
        for n, (_where, row) in enumerate(_rows(root, path), 1):
            if (img := wanted.pop(n, None)) is not None:
                yield img, _image_data(root, row, img["where"])
            if not wanted:
                break


def _annotator_new(study: Study, pid: str, info: dict, plan: _Plan) -> Annotator:
    from annotation.studies.services.studies import annotator_create

    annotator = annotator_create(
        source="import",
        external_id=f"study{study.pk}:{pid}",
        demographics=info["demographics"],
    )
    if info["public_id"]:
        Annotator.objects.filter(pk=annotator.pk).update(public_id=info["public_id"])
        annotator.refresh_from_db()
    # Demographics in an export are the consented ones: the participation
    # records that consent, so a re-export carries them again. Excluded in the
    # export: excluded from this study (their participation), nowhere else.
    Participation.objects.create(
        annotator=annotator,
        study=study,
        consented_at=plan_consent_time(plan, pid) if info["demographics"] else None,
        **_exclusion(info),
    )
    return annotator


def _exclusion(info: dict) -> dict:
    excluded = {"status": Participation.Status.EXCLUDED, "excluded_at": timezone.now()}
    return excluded if info["excluded"] else {}


def _annotators_create(study: Study, plan: _Plan) -> dict[str, Annotator]:
    """New import-scoped identities; people staff mapped join the study with
    their own demographics (the file's are not written onto them), consenting
    where the file carries consented demographics for them."""
    out = {}
    for pid, info in sorted(plan.annotators.items()):
        target = info["target"]
        if target is None:
            out[pid] = _annotator_new(study, pid, info, plan)
            continue
        consent = plan_consent_time(plan, pid) if info["demographics"] else None
        Participation.objects.update_or_create(
            annotator=target,
            study=study,
            defaults=_exclusion(info),
            create_defaults={"consented_at": consent, **_exclusion(info)},
        )
        out[pid] = target
    return out


def plan_consent_time(plan: _Plan, pid: str) -> datetime:
    """The annotator's first rating time stands for when they consented."""
    return plan.first_rating.get(pid) or timezone.now()


def dataset_import(
    *,
    study: Study,
    root: Path | str,
    on_progress: ProgressFn | None = None,
    annotator_map: dict[str, str] | None = None,
    same_annotators: bool = False,
) -> dict:
    """Import an export folder into ``study`` (which must have no images yet).
    ``annotator_map`` (export id → public id here) and ``same_annotators``
    (every export id that exists here is that person) are staff's explicit
    word that the raters are people already here."""
    root = Path(root)
    plan = dataset_plan(
        study=study,
        root=root,
        annotator_map=annotator_map,
        same_annotators=same_annotators,
    )
    total = len(plan.images) + plan.ratings
    with media_journal() as journal, transaction.atomic(durable=True):
        ids: dict[int, int] = {}
        for done, (img, data) in enumerate(_image_bytes(root, plan), 1):
            image = image_create(
                study=study,
                data=data,
                filename=f"{img['sha256'] or img['id']}.img",
                prompt=img["prompt"],
                domain=img["domain"],
                provenance=img["provenance"],
                journal=journal,
            )
            if img["sha256"] and image.sha256 != img["sha256"]:
                raise InvalidInput(
                    f"{img['where']}: the image bytes do not match its sha256."
                )
            ids[img["id"]] = image.pk
            if on_progress:
                on_progress("images", done, total)
        annotators = _annotators_create(study, plan)
        rows = _ratings(root, plan.fmt, study, plan)
        ratings_create(study, rows, ids, annotators, len(ids), total, on_progress)
        rating_counts_set(plan.valid, ids)
    mapped = sum(i["target"] is not None for i in plan.annotators.values())
    return {
        "study": study.slug,
        "format": plan.fmt,
        "images": len(plan.images),
        "annotators": len(plan.annotators),
        "annotators_mapped": mapped,
        "annotators_new": len(plan.annotators) - mapped,
        "ratings": plan.ratings,
        "splits": {s: plan.splits.get(s, 0) for s in SPLITS},
    }
