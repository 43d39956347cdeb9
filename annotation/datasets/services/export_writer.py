"""The export's sharded table writers: one split of one table as numbered Parquet,
JSONL or CSV shards of bounded rows and bytes (see export)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from annotation.datasets.services.export_columns import IMAGE_STRUCT, Column
from annotation.datasets.services.export_schemas import arrow_schema

# --- sharded writers ------------------------------------------------------------


class _ShardedTable:
    """Writes one split of one table as numbered shards in a temporary name,
    renamed to ``<split>-<i>-of-<n>.<ext>`` on close once ``n`` is known (so the
    rows are read once). Buffers at most one row group."""

    def __init__(
        self,
        *,
        folder: Path,
        split: str,
        fmt: str,
        columns: list[Column],
        shard_rows: int,
        shard_bytes: int,
        group_rows: int,
        group_bytes: int,
    ):
        self.folder = folder
        self.split = split
        self.fmt = fmt
        self.columns = columns
        self.schema = arrow_schema(columns)
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.group_rows, self.group_bytes = group_rows, group_bytes
        self.buffer: list[tuple] = []
        self.buffer_bytes = 0
        self.shards: list[Path] = []
        self.shard_rows_written = 0
        self.shard_bytes_written = 0
        self.rows = 0
        # In-memory Arrow size of the rows (the card's num_bytes, as the Hub
        # reports it); for text formats the bytes written.
        self.nbytes = 0
        self._sink = None
        folder.mkdir(parents=True, exist_ok=True)

    # Parquet settings are fixed so that output bytes depend on the data alone.
    def _parquet_writer(self, path: Path) -> pq.ParquetWriter:
        names = [c.name for c in self.columns]
        small_strings = [
            c.name
            for c in self.columns
            if c.type == pa.string() and c.name not in ("prompt", "provenance", "image")
        ]
        compression = {n: "zstd" for n in names}
        stats = [n for n in names if n != "image"]
        if "image" in names and self.schema.field("image").type == IMAGE_STRUCT:
            # PNG/JPEG bytes do not compress; don't spend time trying.
            compression = {n: "zstd" for n in names if n != "image"}
            compression["image.bytes"] = "none"
            compression["image.path"] = "zstd"
            stats.append("image.path")
        return pq.ParquetWriter(
            path,
            self.schema,
            compression=compression,
            use_dictionary=small_strings,
            write_statistics=stats,
            store_schema=True,
        )

    def _open(self) -> None:
        path = self.folder / f".{self.split}-{len(self.shards):05d}.partial"
        self.shards.append(path)
        if self.fmt == "parquet":
            self._sink = self._parquet_writer(path)
        else:
            self._sink = path.open("w", encoding="utf-8", newline="")
            if self.fmt == "csv":
                import csv

                self._csv = csv.writer(self._sink, lineterminator="\n")
                self._csv.writerow([c.name for c in self.columns])
        self.shard_rows_written = self.shard_bytes_written = 0

    def add(self, row: tuple, nbytes: int = 0) -> None:
        self.buffer.append(row)
        self.buffer_bytes += nbytes
        if len(self.buffer) >= self.group_rows or self.buffer_bytes >= self.group_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        if self._sink is None or (
            self.shard_rows_written >= self.shard_rows
            or self.shard_bytes_written >= self.shard_bytes
        ):
            self._close_shard()
            self._open()
        if self.fmt == "parquet":
            arrays = [
                pa.array([r[i] for r in self.buffer], type=c.type)
                for i, c in enumerate(self.columns)
            ]
            batch = pa.Table.from_arrays(arrays, schema=self.schema)
            self._sink.write_table(batch, row_group_size=len(self.buffer))
            self.nbytes += batch.nbytes
        elif self.fmt == "jsonl":
            names = [c.name for c in self.columns]
            for r in self.buffer:
                obj = dict(zip(names, map(_text_value, r), strict=True))
                line = json.dumps(obj, ensure_ascii=False) + "\n"
                self.nbytes += len(line.encode())
                self._sink.write(line)
        else:
            start = self._sink.tell()
            self._csv.writerows(
                [("" if v is None else _text_value(v)) for v in r] for r in self.buffer
            )
            self.nbytes += self._sink.tell() - start
        self.rows += len(self.buffer)
        self.shard_rows_written += len(self.buffer)
        self.shard_bytes_written += self.buffer_bytes
        self.buffer, self.buffer_bytes = [], 0

    def _close_shard(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def close(self) -> list[Path]:
        """Flush, close and give the shards their final names. An empty split
        has no file (and is left out of the card's configs: `datasets` refuses a
        split without data)."""
        self.flush()
        self._close_shard()
        n = len(self.shards)
        final = []
        for i, tmp in enumerate(self.shards):
            path = self.folder / f"{self.split}-{i:05d}-of-{n:05d}.{self.fmt}"
            tmp.rename(path)
            final.append(path)
        return final


def _text_value(v):
    """JSON/CSV cell: timestamps as ISO 8601 in UTC, the rest as they are."""
    if hasattr(v, "isoformat"):
        return v.isoformat().replace("+00:00", "Z")
    return v
