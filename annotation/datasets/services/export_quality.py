"""The export's ``quality_items`` table: which items each exported annotator was
shown between counted images (attention checks, repeats, blind items) and how
each was answered.

An annotator cannot tell these items from counted images (``docs/annotator-ui.md``);
a researcher must be able to, so the dataset says it plainly. Rows come from the
``StreamItem`` records of the exported annotators only (the same filters as the
ratings: nobody erased, nobody left out by the export's options), answered or
skipped; items still pending were never shown and are left out.
"""

from collections.abc import Iterator

import pyarrow as pa

from annotation import selectors
from annotation.datasets.services.export_columns import TIMESTAMP, Column, value_feature

CONFIG = "quality_items"


def quality_columns() -> list[Column]:
    def col(name, type_, dtype, text):
        return Column(name, type_, value_feature(dtype), text)

    return [
        col("item_id", pa.int64(), "int64", "id of the item (stable within a study)"),
        col("annotator_id", pa.string(), "string", "pseudonymous id (annotators)"),
        col(
            "kind",
            pa.string(),
            "string",
            "attention (an attention check), repeat (an image they had rated "
            "before, for test-retest) or blind (a steering paired test)",
        ),
        col("status", pa.string(), "string", "answered or skipped"),
        col("image_id", pa.int64(), "int64", "the repeated image (images)"),
        col("check_id", pa.int64(), "int64", "the attention check (not exported)"),
        col("expected_min", pa.int16(), "int16", "a check's lowest passing score"),
        col("expected_max", pa.int16(), "int16", "a check's highest passing score"),
        col("first_score", pa.int16(), "int16", "a repeat: the score given first"),
        col("score", pa.int16(), "int16", "the answer, on the study scale"),
        col("passed", pa.bool_(), "bool", "a check: whether the answer passed"),
        col(
            "time_on_item_ms",
            pa.int64(),
            "int64",
            "milliseconds from showing to answering, measured by the server",
        ),
        col("shown_at", TIMESTAMP, "timestamp[us, tz=UTC]", "when it was shown"),
        col(
            "answered_at",
            TIMESTAMP,
            "timestamp[us, tz=UTC]",
            "when it was answered or skipped",
        ),
    ]


def quality_rows(items) -> Iterator[tuple]:
    yield from items.values_list(
        "pk",
        "annotator__public_id",
        "kind",
        "status",
        "image_id",
        "check_item_id",
        "check_item__expected_min",
        "check_item__expected_max",
        "source_rating__score",
        "score",
        "passed",
        "time_on_item_ms",
        "shown_at",
        "answered_at",
    ).iterator(chunk_size=5000)


def quality_items(*, study, ratings):
    return selectors.export_stream_items(study=study, ratings=ratings)
