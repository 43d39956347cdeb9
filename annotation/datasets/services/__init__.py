"""Writes of datasets: the researcher export (``export`` and its ``export_*``
parts), importing a Palate export (``import_export_file``) and a per-annotator
ratings dataset (``import_ratings``), with ``import_input`` (reading untrusted
files; its checks are public, the reward model's dataset readers use them) and
``media_journal``.

The names below are this room's public write API; import them from here.
"""

from annotation.datasets.services.import_input import (
    MAX_TEXT_CHARS,
    clean_id,
    clean_text,
    file_bytes,
    inside,
    table_rows,
)
from annotation.datasets.services.import_ratings import (
    RATER_CHARS,
    RatingRecord,
    ratings_import,
)

__all__ = [
    "MAX_TEXT_CHARS",
    "RATER_CHARS",
    "clean_id",
    "clean_text",
    "file_bytes",
    "inside",
    "table_rows",
    "RatingRecord",
    "ratings_import",
]
