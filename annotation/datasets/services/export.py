"""Dataset export: a study's ratings, images and annotators in the layout the field
loads (Parquet as a Hugging Face ``datasets`` repository), or as JSONL / CSV.

Layout of an export folder (``<config>/data/<split>-<i>-of-<n>.<ext>``)::

    README.md                                   dataset card: YAML front matter + prose
    ratings/data/train-00000-of-00001.parquet   one file per split and shard
    ratings/data/val_seen-00000-of-00001.parquet   ... (the five stored splits)
    images/data/train-00000-of-00001.parquet    images embedded as {bytes, path}
    annotators/data/train-00000-of-00001.parquet
    images/files/ab/<sha256>.png                only with ``images="path"``

Three promises:

* **streaming**: rows come from ``.iterator(chunk_size=...)`` and leave as Parquet
  row groups (or lines) of bounded rows and bytes, so memory does not grow with
  the study;
* **deterministic**: fixed row order, fixed writer settings, nothing that depends
  on when the export ran, so the same study exports byte-identical files twice;
* **all or nothing**: everything is written into a temporary folder beside the
  target and renamed into place only when complete; a study without ratings or an
  image file missing from storage is refused with a report before anything is
  written.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.storage import default_storage

from annotation import selectors
from annotation.datasets.services import export_card, export_extra, export_quality
from annotation.datasets.services.export_schemas import (
    annotators_columns,
    demographic_fields,
    images_columns,
    ratings_columns,
)
from annotation.datasets.services.export_writer import _ShardedTable
from annotation.models import Annotator, Export, Image, Study
from annotation.splits import SPLITS
from core.exceptions import InvalidInput

# Tables without splits are one split, named "train" as the Hub expects.
SINGLE_SPLIT = "train"
CONFIGS = ("ratings", "images", "annotators")
FORMATS = tuple(Export.Format.values)
IMAGE_MODES = tuple(Export.Images.values)

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how. Limits bound memory (row groups) and file sizes
    (shards); the defaults follow the Hub's own conventions (about 500 MB per
    Parquet shard, 100 images per row group so the viewer can page)."""

    fmt: str = "parquet"
    images: str = "embed"
    include_excluded: bool = False
    include_invalid: bool = False
    license: str = "other"
    shard_rows: int = 1_000_000
    shard_bytes: int = 500 * 2**20
    group_rows: int = 50_000
    image_group_rows: int = 100
    image_group_bytes: int = 64 * 2**20

    def validate(self) -> None:
        if self.fmt not in FORMATS:
            raise InvalidInput(
                f"Unknown format '{self.fmt}': choose one of {', '.join(FORMATS)}."
            )
        if self.images not in IMAGE_MODES:
            raise InvalidInput(
                f"Unknown images mode '{self.images}': choose one of "
                f"{', '.join(IMAGE_MODES)}."
            )
        if self.images == "embed" and self.fmt != "parquet":
            raise InvalidInput(
                "Images can only be embedded in Parquet; choose images 'path' or "
                "'none' for JSONL and CSV."
            )
        if min(self.shard_rows, self.group_rows, self.image_group_rows) < 1:
            raise InvalidInput("Shard and row-group sizes must be positive.")


# --- reading rows ------------------------------------------------------------


@dataclass
class _Progress:
    fn: ProgressFn | None
    total: int
    done: int = 0
    stage: str = ""
    last: float = field(default=0.0)

    def step(self, stage: str, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.fn is not None and (stage != self.stage or now - self.last >= 0.5):
            self.stage, self.last = stage, now
            self.fn(stage, self.done, self.total)

    def finish(self) -> None:
        if self.fn is not None:
            self.fn("done", self.total, self.total)


def _ratings_rows(ratings, split: str) -> Iterator[tuple]:
    qs = selectors.export_ratings_in_split(ratings=ratings, split=split)
    yield from (
        qs.order_by("pk")
        .values_list(
            "image_id",
            "annotator__public_id",
            "score",
            "time_on_item_ms",
            "created_at",
            "split",
            "is_valid",
            "assignment__dealt_by",
            "assignment__dealt_rank",
            "assignment__dealt_information",
        )
        .iterator(chunk_size=5000)
    )


def _provenance_fields(prov: dict) -> tuple:
    seed = prov.get("seed")
    return (
        str(prov.get("backend") or ""),
        str(prov.get("model") or ""),
        seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
    )


def _image_relpath(image: Image) -> str:
    ext = image.file.name.rsplit(".", 1)[-1].lower() if "." in image.file.name else ""
    return f"images/files/{image.sha256[:2]}/{image.sha256}.{ext or 'img'}"


def _missing_files(images) -> list[dict]:
    missing = []
    for pk, name in images.values_list("pk", "file").iterator(chunk_size=5000):
        if not name or not default_storage.exists(name):
            missing.append({"image_id": pk, "file": name})
    return missing


def _image_rows(
    images, counts: dict[int, int], *, mode: str, fmt: str, root: Path
) -> Iterator[tuple[tuple, int]]:
    """(row, bytes held) per image, in id order; reads one file at a time."""
    for image in images.iterator(chunk_size=500):
        backend, model, seed = _provenance_fields(image.provenance or {})
        row = [
            image.pk,
            image.sha256,
            image.prompt,
            image.domain,
            backend,
            model,
            seed,
            json.dumps(image.provenance or {}, sort_keys=True, ensure_ascii=False),
            image.width,
            image.height,
            image.format,
            counts.get(image.pk, 0),
        ]
        nbytes = 0
        if mode != "none":
            rel = _image_relpath(image)
            try:
                with default_storage.open(image.file.name, "rb") as fh:
                    if mode == "embed":
                        data = fh.read()
                        nbytes = len(data)
                        value = {"bytes": data, "path": rel.rsplit("/", 1)[-1]}
                    else:
                        target = root / rel
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with target.open("wb") as out:
                            shutil.copyfileobj(fh, out, 1 << 20)
                        value = (
                            {"bytes": None, "path": rel} if fmt == "parquet" else rel
                        )
            except FileNotFoundError:
                raise InvalidInput(
                    f"Image {image.pk}: its file {image.file.name} disappeared from "
                    "storage during the export; nothing was written."
                ) from None
            row.append(value)
        yield tuple(row), nbytes


def _annotator_rows(
    annotators, counts: dict[int, int], study: Study, consented: set[int]
) -> Iterator[tuple]:
    fields = demographic_fields(study)
    excluded_here = selectors.export_excluded_annotator_ids(study=study)
    for a in annotators.iterator(chunk_size=2000):
        demo = (a.demographics or {}) if a.pk in consented else {}
        yield (
            a.public_id,
            counts.get(a.pk, 0),
            a.status == Annotator.Status.EXCLUDED or a.pk in excluded_here,
            *[
                (str(demo[f]) if demo.get(f) not in (None, "") else None)
                for f in fields
            ],
        )


# --- the export -----------------------------------------------------------------


def _table(root: Path, config: str, split: str, opts: ExportOptions, columns, **kw):
    return _ShardedTable(
        folder=root / config / "data",
        split=split,
        fmt=opts.fmt,
        columns=columns,
        shard_rows=opts.shard_rows,
        shard_bytes=opts.shard_bytes,
        group_rows=kw.get("group_rows", opts.group_rows),
        group_bytes=kw.get("group_bytes", 1 << 62),
    )


def _preflight(study: Study, ratings, images, opts: ExportOptions) -> dict:
    """Counts, and the reasons to refuse before anything is written."""
    n_ratings = ratings.count()
    n_images = images.count()
    if n_ratings == 0:
        total = study.ratings.count()
        raise InvalidInput(
            f"Study '{study.slug}' has no ratings to export ({n_images} images, "
            f"{total} ratings in all"
            + (
                ", all left out by the default filters: see --include-excluded and "
                "--include-invalid"
                if total
                else ""
            )
            + "). Nothing was written."
        )
    if opts.images != "none":
        missing = _missing_files(images)
        if missing:
            shown = ", ".join(f"#{m['image_id']} ({m['file']})" for m in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise InvalidInput(
                f"{len(missing)} image file(s) of study '{study.slug}' are missing "
                f"from storage: {shown}{more}. Nothing was written; restore the "
                "files or export with --images none."
            )
    n_annotators = selectors.export_annotator_queryset(ratings=ratings).count()
    n_quality = export_quality.quality_items(study=study, ratings=ratings).count()
    return {
        "ratings": n_ratings,
        "images": n_images,
        "annotators": n_annotators,
        "quality_items": n_quality,
        **export_extra.counts(study=study, ratings=ratings),
    }


@dataclass(frozen=True)
class SplitFiles:
    files: list[Path]
    rows: int
    nbytes: int


def _done(table: _ShardedTable) -> SplitFiles:
    return SplitFiles(files=table.close(), rows=table.rows, nbytes=table.nbytes)


def _write_tables(
    root: Path, study: Study, ratings, images, opts: ExportOptions, progress
) -> dict[str, dict[str, SplitFiles]]:
    """{config: {split: SplitFiles}}, every split of ratings included."""
    written: dict[str, dict[str, SplitFiles]] = {c: {} for c in CONFIGS}
    for split in SPLITS:
        table = _table(root, "ratings", split, opts, ratings_columns())
        for row in _ratings_rows(ratings, split):
            table.add(row)
            progress.step("ratings")
        written["ratings"][split] = _done(table)

    counts = selectors.export_rating_counts_by_image(ratings=ratings)
    table = _table(
        root,
        "images",
        SINGLE_SPLIT,
        opts,
        images_columns(opts.images, opts.fmt),
        group_rows=opts.image_group_rows,
        group_bytes=opts.image_group_bytes,
    )
    for row, nbytes in _image_rows(
        images, counts, mode=opts.images, fmt=opts.fmt, root=root
    ):
        table.add(row, nbytes)
        progress.step("images")
    written["images"][SINGLE_SPLIT] = _done(table)

    annotators = selectors.export_annotator_queryset(ratings=ratings)
    rated = selectors.export_rating_counts_by_annotator(ratings=ratings)
    consented = selectors.export_consented_annotator_ids(study=study)
    table = _table(root, "annotators", SINGLE_SPLIT, opts, annotators_columns(study))
    for row in _annotator_rows(annotators, rated, study, consented):
        table.add(row)
        progress.step("annotators")
    written["annotators"][SINGLE_SPLIT] = _done(table)

    # Only when there are any: `datasets` refuses a config without data files.
    items = export_quality.quality_items(study=study, ratings=ratings)
    if items.exists():
        config = export_quality.CONFIG
        table = _table(
            root, config, SINGLE_SPLIT, opts, export_quality.quality_columns()
        )
        for row in export_quality.quality_rows(items):
            table.add(row)
            progress.step(config)
        written[config] = {SINGLE_SPLIT: _done(table)}
    _write_extra(root, study, ratings, opts, progress, written)
    return written


def _write_extra(root: Path, study, ratings, opts, progress, written) -> None:
    """The tables apps above add (``annotation.hooks.ExportTable``)."""
    for extra in export_extra.tables():
        got = iter(export_extra.rows(extra, study=study, ratings=ratings))
        first = next(got, None)
        if first is None:
            continue  # as above: no config without data
        cols = export_extra.columns_of(extra)
        table = _table(root, extra.config, SINGLE_SPLIT, opts, cols)
        for row in itertools.chain([first], got):
            table.add(row)
            progress.step(extra.config)
        written[extra.config] = {SINGLE_SPLIT: _done(table)}


def dataset_export(
    *,
    study: Study,
    out: Path | str,
    options: ExportOptions | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> dict:
    """Write the study's dataset to the folder ``out`` and return a report.

    Raises InvalidInput (nothing written) for bad options, an existing target, a
    study with no ratings to export or image files missing from storage.
    """
    opts = options or ExportOptions()
    opts.validate()
    out = Path(out).resolve()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise InvalidInput(f"{out} already exists; choose a new folder or overwrite.")
    ratings = selectors.export_rating_queryset(
        study=study,
        include_excluded=opts.include_excluded,
        include_invalid=opts.include_invalid,
    )
    images = selectors.export_image_queryset(study=study)
    counts = _preflight(study, ratings, images, opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    )
    progress = _Progress(on_progress, total=sum(counts.values()))
    try:
        written = _write_tables(tmp, study, ratings, images, opts, progress)
        progress.step("card", 0)
        stats = export_card.dataset_stats(study=study, ratings=ratings)
        columns = {
            "ratings": ratings_columns(),
            "images": images_columns(opts.images, opts.fmt),
            "annotators": annotators_columns(study),
        }
        if export_quality.CONFIG in written:
            columns[export_quality.CONFIG] = export_quality.quality_columns()
        for extra in export_extra.tables():
            if extra.config in written:
                columns[extra.config] = export_extra.columns_of(extra)
        stats["sections"] = export_extra.card_sections(written)
        card = export_card.card_render(
            study=study, options=opts, written=written, stats=stats, columns=columns
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress.finish()
    return _report(study, out, opts, counts, written, stats)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder to its name (same file system: atomic)."""
    os.chmod(tmp, 0o755)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _report(study, out: Path, opts, counts, written, stats) -> dict:
    files = []
    for splits in written.values():
        for part in splits.values():
            for p in part.files:
                rel = p.relative_to(p.parents[2])
                files.append({"path": str(rel), "bytes": (out / rel).stat().st_size})
    return {
        "study": study.slug,
        "format": opts.fmt,
        "images_mode": opts.images,
        "path": str(out),
        "ratings": counts["ratings"],
        "images": counts["images"],
        "annotators": written["annotators"][SINGLE_SPLIT].rows,
        "quality_items": counts["quality_items"],
        **{t.config: counts[t.config] for t in export_extra.tables()},
        "splits": {s: part.rows for s, part in written["ratings"].items()},
        "alpha_interval": stats["alpha"],
        "alpha_by_domain": stats["alpha_by_domain"],
        "files": sorted(files, key=lambda f: f["path"]),
        "bytes": sum(f["bytes"] for f in files),
    }
