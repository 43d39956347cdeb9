"""Reading import files without trusting them: both importers (``import_dataset``
and ``import_ratings``) read rows and values through these, so a hostile file
gets a message naming the file, the line or row and the field — never a
traceback — and every size, length, depth and count has a cap (docs/export.md,
"Limits on imports").
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from core.exceptions import InvalidInput
from core.validation import json_problem

# Caps (documented in docs/export.md; change them there too).
MAX_LINE_BYTES = 16 * 2**20  # one JSONL line
CSV_FIELD_BYTES = 128 * 2**10  # csv.field_size_limit's default, kept on purpose
MAX_ROWS = 5_000_000  # rows in one table
MAX_PROMPT_CHARS = 20_000
MAX_TEXT_CHARS = 100  # demographics values
MAX_JSON_CHARS = 64 * 2**10  # provenance as JSON text
MAX_TIME_ON_ITEM_MS = 24 * 3600 * 1000  # a day on one image is not a measurement
PARQUET_BATCH = 256
PARQUET_BATCH_BYTES = 4 * 2**20  # one batch of wide rows (images) in memory


def _controls(text: str, *, allow_newlines: bool) -> bool:
    allowed = "\t\n\r" if allow_newlines else ""
    return any(ord(c) < 32 and c not in allowed for c in text) or "\x7f" in text


def clean_text(
    value, *, field: str, where: str, max_chars: int, allow_newlines: bool = True
) -> str:
    """A string without NUL or control characters, at most ``max_chars`` long:
    refused with a message otherwise (never cut short, never cleaned silently)."""
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidInput(f"{where}: {field} is not text.")
    text = str(value)
    if "\x00" in text:
        raise InvalidInput(f"{where}: {field} contains a NUL character.")
    if _controls(text, allow_newlines=allow_newlines):
        raise InvalidInput(f"{where}: {field} contains a control character.")
    if len(text) > max_chars:
        raise InvalidInput(
            f"{where}: {field} is {len(text)} characters long; at most "
            f"{max_chars} are allowed."
        )
    return text


def clean_id(value, *, field: str, where: str, max_chars: int) -> str:
    """An identifier: non-empty, one line, no control characters, capped."""
    text = clean_text(
        value, field=field, where=where, max_chars=max_chars, allow_newlines=False
    ).strip()
    if not text:
        raise InvalidInput(f"{where}: {field} is missing.")
    return text


def whole_number(
    value, *, field: str, where: str, lo: int, hi: int, optional: bool = False
) -> int | None:
    """An integer in [lo, hi]; NaN, infinities, fractions and text are refused."""
    if value is None or value == "":
        if optional:
            return None
        raise InvalidInput(f"{where}: {field} is missing.")
    number = value
    if isinstance(value, str):
        try:
            number = float(value) if any(c in value for c in ".eEnN") else int(value)
        except ValueError:
            raise InvalidInput(
                f"{where}: {field} {value[:40]!r} is not a number."
            ) from None
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise InvalidInput(f"{where}: {field} is not a number.")
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidInput(f"{where}: {field} {value!r} is not a finite number.")
    if number != int(number):
        raise InvalidInput(f"{where}: {field} {number} is not a whole number.")
    if not lo <= number <= hi:
        raise InvalidInput(f"{where}: {field} {number:g} is outside {lo}–{hi}.")
    return int(number)


def time_on_item(value, *, where: str) -> int | None:
    return whole_number(
        value,
        field="time_on_item_ms",
        where=where,
        lo=0,
        hi=MAX_TIME_ON_ITEM_MS,
        optional=True,
    )


def aware_datetime(value, *, field: str, where: str) -> datetime:
    """An ISO 8601 date-time with a time zone (a naive one is ambiguous)."""
    if isinstance(value, datetime):
        when = value
    else:
        text = clean_text(value, field=field, where=where, max_chars=64)
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{where}: {field} {text!r} is not an ISO 8601 date-time."
            ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidInput(
            f"{where}: {field} {when.isoformat()} has no time zone (write e.g. "
            "2026-01-31T12:00:00+00:00)."
        )
    return when


def json_object(value, *, field: str, where: str) -> dict:
    """A JSON object given as text (or already decoded), within the caps."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        if len(value) > MAX_JSON_CHARS:
            raise InvalidInput(
                f"{where}: {field} is {len(value)} characters of JSON; at most "
                f"{MAX_JSON_CHARS} are allowed."
            )
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise InvalidInput(f"{where}: {field} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: {field} is not a JSON object.")
    problem = json_problem(value)
    if problem:
        raise InvalidInput(f"{where}: {field} {problem}.")
    return value


def truthy(value, *, field: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no", ""}:
        return False
    raise InvalidInput(f"{where}: {field} {text[:20]!r} is not true or false.")


# --- rows ---------------------------------------------------------------------


def table_rows(
    path: Path, *, label: str, columns: Iterable[str] | None = None
) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` for each row of a .parquet, .jsonl or .csv file; ``where``
    names the file and the line (row for Parquet). Every way the file can be
    malformed is an ``InvalidInput`` naming the place. ``columns``: a Parquet
    file is read for these columns only (those it has)."""
    suffix = path.suffix.lower()
    readers = {".parquet": _parquet, ".jsonl": _jsonl, ".csv": _csv}
    if suffix not in readers:
        raise InvalidInput(f"{label}: use a .csv, .jsonl or .parquet file.")
    count = 0
    rows = (
        _parquet(path, label, columns)
        if suffix == ".parquet"
        else readers[suffix](path, label)
    )
    for where, row in rows:
        count += 1
        if count > MAX_ROWS:
            raise InvalidInput(f"{label}: more than {MAX_ROWS} rows.")
        yield where, row


def table_columns(path: Path) -> list[str] | None:
    """A Parquet file's column names (None for other formats, or unreadable:
    reading its rows then says what is wrong)."""
    if path.suffix.lower() != ".parquet":
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError):
        return None


def _batch_rows(table) -> int:
    """Rows per batch: ``PARQUET_BATCH``, fewer where rows are large (embedded
    images), so that one batch holds about ``PARQUET_BATCH_BYTES``."""
    meta = table.metadata
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    widest = max((g.total_byte_size / max(1, g.num_rows) for g in groups), default=0)
    return max(1, min(PARQUET_BATCH, int(PARQUET_BATCH_BYTES // max(widest, 1))))


def _parquet(path: Path, label: str, columns=None) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 0
    try:
        # pre_buffer=False: pyarrow would otherwise read (and keep) whole column
        # chunks ahead; with images embedded that held the table (issue 29).
        table = pq.ParquetFile(path, pre_buffer=False, buffer_size=2**20)
        if columns is not None:
            columns = [c for c in columns if c in table.schema_arrow.names]
        batches = table.iter_batches(batch_size=_batch_rows(table), columns=columns)
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                yield f"{label} row {n}", row
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(
            f"{label} row {n + 1}: not a readable Parquet file ({_short(exc)})."
        ) from None


def _jsonl(path: Path, label: str) -> Iterator[tuple[str, dict]]:
    with path.open("rb") as fh:
        n = 0
        while line := fh.readline(MAX_LINE_BYTES + 1):
            n += 1
            where = f"{label} line {n}"
            if len(line) > MAX_LINE_BYTES:
                raise InvalidInput(f"{where}: longer than {MAX_LINE_BYTES} bytes.")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"{where}: not UTF-8 (byte {exc.start + 1})."
                ) from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{where}: not JSON ({exc.msg}).") from None
            except RecursionError:
                raise InvalidInput(f"{where}: JSON nested too deeply.") from None
            if not isinstance(row, dict):
                raise InvalidInput(
                    f"{where}: a {type(row).__name__}, not a JSON object."
                )
            yield where, row


def _csv(path: Path, label: str) -> Iterator[tuple[str, dict]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                where = f"{label} line {reader.line_num}"
                if None in row or None in row.values():
                    raise InvalidInput(f"{where}: not as many fields as the header.")
                yield where, row
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{label} after line {reader.line_num}: not UTF-8 (byte "
                f"{exc.start + 1} of a block)."
            ) from None
        except csv.Error as exc:
            raise InvalidInput(
                f"{label} line {reader.line_num + 1}: {_short(exc)} (a CSV field "
                f"holds at most {CSV_FIELD_BYTES} characters)."
            ) from None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def file_bytes(path: Path, *, where: str, max_bytes: int) -> bytes:
    """A file's bytes, refused (without reading it) when over ``max_bytes``."""
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidInput(
            f"{where}: {path.name} is {size} bytes, over the {max_bytes}-byte limit."
        )
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidInput(f"{where}: {path.name} is over the {max_bytes}-byte limit.")
    return data


def inside(base: Path, value: str, *, where: str, field: str) -> Path:
    """``value`` as a file inside ``base`` (symlinks resolved): anything that
    lands outside — ``..``, an absolute path, a link out — is refused."""
    text = clean_text(value, field=field, where=where, max_chars=4096)
    root = base.resolve()
    path = (root / text).resolve()
    if root not in path.parents:
        raise InvalidInput(f"{where}: {field} {text!r} is outside {base}.")
    if not path.is_file():
        raise InvalidInput(f"{where}: {field} {text!r} is not a file in {base}.")
    return path
