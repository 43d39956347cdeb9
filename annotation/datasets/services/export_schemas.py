"""The export's table schemas: the columns of the ratings, images and annotators
tables, and their Arrow schema with the `datasets` features as metadata."""

import json

import pyarrow as pa

from annotation.datasets.services.export_columns import IMAGE_STRUCT, TIMESTAMP, Column
from annotation.datasets.services.export_columns import value_feature as _value
from annotation.models import DEMOGRAPHIC_FIELDS, Study

# --- table schemas --------------------------------------------------------------
# Each column: (name, Arrow type, the `datasets` feature it stands for); see
# export_columns.


def ratings_columns() -> list[Column]:
    return [
        Column("image_id", pa.int64(), _value("int64"), "id of the image (images)"),
        Column(
            "annotator_id",
            pa.string(),
            _value("string"),
            "pseudonymous annotator id (annotators)",
        ),
        Column(
            "score",
            pa.int16(),
            _value("int16"),
            "the rating, on the study scale",
        ),
        Column(
            "time_on_item_ms",
            pa.int64(),
            _value("int64"),
            "milliseconds from showing the image to the rating, measured by the "
            "server (empty for imported ratings)",
        ),
        Column(
            "created_at",
            TIMESTAMP,
            _value("timestamp[us, tz=UTC]"),
            "when the rating was submitted",
        ),
        Column("split", pa.string(), _value("string"), "the stored split"),
        Column(
            "is_valid",
            pa.bool_(),
            _value("bool"),
            "false for ratings kept by --include-excluded / --include-invalid",
        ),
    ]


def images_columns(mode: str, fmt: str) -> list[Column]:
    cols = [
        Column("image_id", pa.int64(), _value("int64"), "Palate image id"),
        Column("sha256", pa.string(), _value("string"), "SHA-256 of the image file"),
        Column(
            "prompt",
            pa.string(),
            _value("string"),
            "the prompt it was made from",
        ),
        Column("domain", pa.string(), _value("string"), "content domain"),
        Column("backend", pa.string(), _value("string"), "generation backend"),
        Column("model", pa.string(), _value("string"), "generation model"),
        Column("seed", pa.int64(), _value("int64"), "generation seed"),
        Column(
            "provenance",
            pa.string(),
            _value("string"),
            "full generation record, JSON with sorted keys",
        ),
        Column("width", pa.int32(), _value("int32"), "pixels"),
        Column("height", pa.int32(), _value("int32"), "pixels"),
        Column("format", pa.string(), _value("string"), "PNG, JPEG or WEBP"),
        Column(
            "n_ratings",
            pa.int32(),
            _value("int32"),
            "ratings of this image in this export",
        ),
    ]
    if mode == "none":
        return cols
    if fmt == "parquet":
        cols.append(
            Column(
                "image",
                IMAGE_STRUCT,
                {"_type": "Image"},
                "the image (decoded by `datasets` as a PIL image)"
                if mode == "embed"
                else "the image by path, relative to the dataset root",
            )
        )
    else:
        cols.append(
            Column(
                "image",
                pa.string(),
                _value("string"),
                "path of the image file, relative to the dataset root",
            )
        )
    return cols


def demographic_fields(study: Study) -> list[str]:
    """The demographics this study asked, in the study's order (only those)."""
    asked = [f for f in (study.demographics_fields or []) if f in DEMOGRAPHIC_FIELDS]
    return list(dict.fromkeys(asked))


def annotators_columns(study: Study) -> list[Column]:
    cols = [
        Column(
            "annotator_id",
            pa.string(),
            _value("string"),
            "pseudonymous annotator id",
        ),
        Column(
            "n_ratings",
            pa.int32(),
            _value("int32"),
            "their ratings in this export",
        ),
        Column(
            "excluded",
            pa.bool_(),
            _value("bool"),
            "excluded by the researchers (only with --include-excluded)",
        ),
    ]
    for name in demographic_fields(study):
        cols.append(
            Column(
                name,
                pa.string(),
                _value("string"),
                "self-reported; empty where not given or not consented",
            )
        )
    return cols


def arrow_schema(columns: list[Column]) -> pa.Schema:
    features = {c.name: c.feature for c in columns}
    meta = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema([pa.field(c.name, c.type) for c in columns], metadata=meta)
