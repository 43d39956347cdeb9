"""Writes of datasets: the researcher export (``export`` and its ``export_*``
parts), importing a Palate export (``import_export_file``) and a per-annotator
ratings dataset (``import_ratings``), with ``import_input`` and ``media_journal``.

The names below are this room's public write API; import them from here.
"""

from annotation.datasets.services.import_ratings import RatingRecord, ratings_import

__all__ = [
    "RatingRecord",
    "ratings_import",
]
