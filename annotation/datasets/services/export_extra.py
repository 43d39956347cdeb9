"""Tables that apps above ``annotation`` add to the export
(``annotation.hooks.ExportTable``; the taste portrait's ``portrait_feedback``):
each its own config with one split, ``train``, written only when it has rows,
for the annotators the export carries only, never counted as ratings."""

from __future__ import annotations

import pyarrow as pa

from annotation import selectors
from annotation.datasets.services.export_columns import TIMESTAMP, Column, value_feature
from annotation.hooks import ExportTable, export_tables

TYPES = {
    "int16": pa.int16(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "timestamp[us, tz=UTC]": TIMESTAMP,
}


def columns_of(table: ExportTable) -> list[Column]:
    return [
        Column(name, TYPES[dtype], value_feature(dtype), text)
        for name, dtype, text in table.columns
    ]


def counts(*, study, ratings) -> dict[str, int]:
    """{config: rows} of every registered table, for these exported ratings."""
    annotators = selectors.export_annotator_queryset(ratings=ratings)
    return {t.config: t.count(study=study, annotators=annotators) for t in tables()}


def tables() -> list[ExportTable]:
    return export_tables()


def rows(table: ExportTable, *, study, ratings):
    annotators = selectors.export_annotator_queryset(ratings=ratings)
    return table.rows(study=study, annotators=annotators)


def card_sections(written: dict) -> list[str]:
    """The card's lines on each registered table the export wrote."""
    lines: list[str] = []
    for table in tables():
        if table.config in written:
            n = sum(part.rows for part in written[table.config].values())
            lines += [*table.card(n), ""]
    return lines
