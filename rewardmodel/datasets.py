"""Reading per-annotator ratings datasets into ``annotation`` import records.

Sources:

* one file (``.csv``, ``.jsonl``, ``.parquet``) with a row per rating;
* PAMELA's layout (``--layout pamela``): one parquet file per published split
  (``pamela_train``, ``pamela_val_seen``, ``pamela_val_unseen``,
  ``pamela_test_seen``, ``pamela_test_unseen``; Hugging Face's
  ``data/<split>-00000-of-00001.parquet`` naming is found too), images stored
  inside as ``{"bytes": ..., "path": ...}`` like the hub's Image feature — either
  a local directory, or ``hf://bethgelab/PAMELA`` (downloaded with the
  ``datasets`` library; needs network access).

Every reader streams: records come one at a time from parquet record batches
(or csv/jsonl lines, or the hub's memory-mapped Arrow files), so the importer
never holds the dataset (and every row's image) in memory.

Columns are found by name; ``mapping`` (``--map field=column``) overrides any of
them. Fields: ``rater``, ``score``, ``image`` (bytes, a hub image dict, or a path
relative to the data), ``sha256`` (of an image already in the study), ``split``,
plus demographics and image metadata columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.conf import settings

from annotation.datasets.services import import_input as check
from annotation.datasets.services.import_ratings import RATER_CHARS, RatingRecord
from core.exceptions import InvalidInput

CANDIDATES = {
    "rater": ["rater", "participant_id", "user_id", "worker_id", "annotator_id"],
    "score": ["score", "rating", "aesthetic_score"],
    "image": ["image", "img", "image_path", "path", "file_name"],
    "sha256": ["sha256"],
    "split": ["split"],
}
DEMOGRAPHICS = ["age", "gender", "nationality", "country", "education"]
IMAGE_META = ["visual_group", "group", "category", "type", "image_type", "domain"]
PAMELA_SPLITS = [
    "pamela_train",
    "pamela_val_seen",
    "pamela_val_unseen",
    "pamela_test_seen",
    "pamela_test_unseen",
]


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise InvalidInput(f"--map {item!r}: use field=column, e.g. rater=user_id.")
        out[field.strip()] = column.strip()
    return out


class Columns:
    """Which column feeds which field, decided from the first row's keys."""

    def __init__(self, keys: list[str], mapping: dict[str, str]):
        keys_l = {k.lower(): k for k in keys}
        missing = [
            c for c in mapping.values() if c not in keys and c.lower() not in keys_l
        ]
        if missing:
            raise InvalidInput(f"--map names columns not in the data: {missing}.")
        self.field = {}
        for name, options in CANDIDATES.items():
            if name in mapping:
                self.field[name] = keys_l.get(mapping[name].lower(), mapping[name])
                continue
            found = next((keys_l[o] for o in options if o in keys_l), None)
            if found:
                self.field[name] = found
        used = set(self.field.values())
        self.demographics = _pick(
            mapping.get("demographics"), DEMOGRAPHICS, keys_l, used
        )
        self.meta = _pick(mapping.get("meta"), IMAGE_META, keys_l, used)
        for need in ("rater", "score"):
            if need not in self.field:
                raise InvalidInput(
                    f"No '{need}' column (looked for {CANDIDATES[need]}); "
                    f"give --map {need}=<column>. Columns: {keys}."
                )
        if "image" not in self.field and "sha256" not in self.field:
            raise InvalidInput(
                f"No image column (looked for {CANDIDATES['image']} or sha256); "
                f"give --map image=<column>. Columns: {keys}."
            )


def _pick(explicit: str | None, options: list[str], keys_l: dict, used: set) -> list:
    if explicit:
        return [keys_l.get(c.strip().lower(), c.strip()) for c in explicit.split(",")]
    return [keys_l[o] for o in options if o in keys_l and keys_l[o] not in used]


def _image(value, base: Path, where: str) -> tuple[bytes, str]:
    """An image's bytes: embedded, or a file inside the data's own folder (a path
    that resolves outside it, through ``..``, an absolute path or a symlink, is
    refused); at most PALATE_MAX_UPLOAD_BYTES."""
    limit = settings.PALATE_MAX_UPLOAD_BYTES
    name = ""
    if isinstance(value, dict):  # the hub's Image feature in parquet
        name = check.clean_text(
            value.get("path"), field="image path", where=where, max_chars=4096
        )
        if value.get("bytes"):
            value = value["bytes"]
        else:
            value = name
    if isinstance(value, bytes | bytearray):
        if len(value) > limit:
            raise InvalidInput(f"{where}: image is over the {limit}-byte limit")
        return bytes(value), name or where
    if not value:
        raise InvalidInput(f"{where}: empty image")
    path = check.inside(base, value, where=where, field="image")
    return check.file_bytes(path, where=where, max_bytes=limit), str(path)


def _meta(row: dict, columns: list[str], where: str) -> dict:
    """Demographics or image metadata: numbers kept as they are (finite), text
    checked (no NUL or control characters, capped); anything else refused."""
    out = {}
    for c in columns:
        value = row.get(c)
        if value in (None, ""):
            continue
        if isinstance(value, bool | int) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            out[c] = value
        else:
            out[c] = check.clean_text(
                value, field=c, where=where, max_chars=check.MAX_TEXT_CHARS
            )
    return out


def records_from_rows(
    rows: Iterable[tuple[str, dict]],
    *,
    mapping: dict,
    base: Path,
    split: str = "",
    start: int = 1,
) -> Iterator[RatingRecord]:
    """One record per ``(where, row)`` pair, lazily (rows may be a stream;
    ``where`` names the row's file and line); the columns are decided from the
    first row's keys."""
    cols = f = None
    for line, (where, row) in enumerate(rows, start=start):
        if cols is None:
            cols = Columns(list(row.keys()), mapping)
            f = cols.field
        data, key = None, ""
        if "image" in f and row.get(f["image"]) not in (None, ""):
            data, key = _image(row[f["image"]], base, where)
        sha = check.clean_text(
            row.get(f.get("sha256", "")), field="sha256", where=where, max_chars=64
        ).strip()
        yield RatingRecord(
            rater=check.clean_id(
                row.get(f["rater"]), field="rater", where=where, max_chars=RATER_CHARS
            ),
            score=_number(row.get(f["score"])),
            image_key=key or sha,
            image_bytes=data,
            image_sha256=sha,
            demographics=_meta(row, cols.demographics, where),
            image_meta=_meta(row, cols.meta, where),
            split=split
            or _split_name(
                check.clean_text(
                    row.get(f.get("split", "")),
                    field="split",
                    where=where,
                    max_chars=40,
                )
            ),
            line=line,
            where=where,
        )


def _number(value):
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else None
        except ValueError:
            return value
    return value


def _split_name(name) -> str:
    name = str(name or "").strip().lower()
    return name.removeprefix("pamela_")


def read_table(path: Path) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` for each row of a .csv, .jsonl or .parquet file, as a
    stream (parquet: one record batch at a time), read through
    ``import_input`` (caps, and a message naming the file and line)."""
    return check.table_rows(path, label=path.name)


def pamela_split_files(root: Path) -> dict[str, list[Path]]:
    """Per published split, its parquet files under ``root``."""
    out = {}
    for split in PAMELA_SPLITS:
        files = sorted(
            p
            for p in root.rglob("*.parquet")
            if p.stem == split or p.stem.startswith(f"{split}-")
        )
        if files:
            out[split] = files
    if not out:
        raise InvalidInput(
            f"No PAMELA split files under {root} (expected e.g. "
            "data/pamela_train-00000-of-00001.parquet or pamela_train.parquet)."
        )
    return out


def read_pamela_local(root: Path, mapping: dict) -> Iterator[RatingRecord]:
    line = 1
    for split, files in pamela_split_files(root).items():
        for path in files:
            for record in records_from_rows(
                read_table(path),
                mapping=mapping,
                base=path.parent,
                split=_split_name(split),
                start=line,
            ):
                line = record.line + 1
                yield record


def read_pamela_hub(repo: str, mapping: dict) -> Iterator[RatingRecord]:
    """``hf://owner/name``: every PAMELA split of the hub dataset (network). The
    splits are downloaded into the ``datasets`` cache and read from there row by
    row (memory-mapped Arrow), images undecoded."""
    try:
        import datasets
    except ImportError:
        raise InvalidInput(
            "Reading from the Hugging Face hub needs the 'datasets' package "
            "(pip install datasets), or download the dataset and give its folder."
        ) from None
    try:
        dd = datasets.load_dataset(repo)
    except Exception as exc:  # network, auth, missing repo: say it once, clearly
        raise InvalidInput(f"Could not load {repo} from the hub: {exc}") from None
    line = 1
    for split in PAMELA_SPLITS:
        if split not in dd:
            continue
        ds = dd[split]
        for name, feature in ds.features.items():
            if isinstance(feature, datasets.Image):
                ds = ds.cast_column(name, datasets.Image(decode=False))
        rows = ((f"{split} row {n}", row) for n, row in enumerate(ds, start=1))
        for record in records_from_rows(
            rows,
            mapping=mapping,
            base=Path.cwd(),
            split=_split_name(split),
            start=line,
        ):
            line = record.line + 1
            yield record


def records_read(source: str, *, layout: str, mapping: dict) -> Iterator[RatingRecord]:
    """The dataset's records as a stream (nothing is read until iterated, and
    no more than a record batch is held at a time). Bad paths fail at once."""
    if source.startswith("hf://"):
        return read_pamela_hub(source.removeprefix("hf://"), mapping)
    path = Path(source)
    if layout == "pamela":
        if not path.is_dir():
            raise InvalidInput(
                f"{path}: the PAMELA layout is a folder of parquet files."
            )
        pamela_split_files(path)  # no split files: say so now
        return read_pamela_local(path, mapping)
    if not path.is_file():
        raise InvalidInput(f"No file {path}.")
    if path.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
        raise InvalidInput(f"{path}: use a .csv, .jsonl or .parquet file.")
    return records_from_rows(read_table(path), mapping=mapping, base=path.parent)
