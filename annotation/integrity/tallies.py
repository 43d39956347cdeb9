"""The tallies the database keeps (``StudyTally``, ``RatingTally``: triggers of
migrations 0025 and 0027) compared with the rows they count, and set right.

One aggregate per table (images per study; ratings, all and valid, per
annotator and study), full-joined to the tally, so a missing tally row where
there are rows and a non-zero tally with no rows are both drift. No subquery
per row: the check stays one pass over the ratings (issue 29)."""

from django.db import connection, transaction

from annotation.models import Image, Rating, RatingTally, StudyTally

_IMAGES = f"""
SELECT COALESCE(c.study_id, t.study_id), COALESCE(t.images, 0), COALESCE(c.n, 0)
  FROM (SELECT i.study_id, COUNT(*) AS n FROM {Image._meta.db_table} i
         {{where_i}} GROUP BY i.study_id) c
  FULL OUTER JOIN (SELECT t.study_id, t.images
                     FROM {StudyTally._meta.db_table} t {{where_t}}) t
    ON t.study_id = c.study_id
 WHERE COALESCE(t.images, 0) <> COALESCE(c.n, 0)
 ORDER BY 1
"""

_RATINGS = f"""
SELECT COALESCE(c.annotator_id, t.annotator_id), COALESCE(c.study_id, t.study_id),
       COALESCE(t.rated, 0), COALESCE(c.n, 0), COALESCE(t.valid, 0), COALESCE(c.v, 0)
  FROM (SELECT r.annotator_id, r.study_id, COUNT(*) AS n,
               SUM(CASE WHEN r.is_valid THEN 1 ELSE 0 END) AS v
          FROM {Rating._meta.db_table} r {{where_r}}
         GROUP BY r.annotator_id, r.study_id) c
  FULL OUTER JOIN (SELECT t.annotator_id, t.study_id, t.rated, t.valid
                     FROM {RatingTally._meta.db_table} t {{where_t}}) t
    ON t.annotator_id = c.annotator_id AND t.study_id = c.study_id
 WHERE COALESCE(t.rated, 0) <> COALESCE(c.n, 0)
    OR COALESCE(t.valid, 0) <> COALESCE(c.v, 0)
 ORDER BY 1, 2
"""


def tally_drift(study_id: int | None) -> tuple[list, list]:
    """(study tallies, rating tallies) that differ from the rows:
    ``(study id, kept images, image rows)`` and ``(annotator id, study id,
    kept rated, rating rows, kept valid, valid rating rows)``."""
    where = {k: "" for k in ("where_i", "where_r", "where_t")}
    params: list[int] = []
    if study_id:
        where = {
            "where_i": "WHERE i.study_id = %s",
            "where_r": "WHERE r.study_id = %s",
            "where_t": "WHERE t.study_id = %s",
        }
        params = [study_id, study_id]
    with connection.cursor() as cursor:
        cursor.execute(
            _IMAGES.format(where_i=where["where_i"], where_t=where["where_t"]), params
        )
        studies = [tuple(row) for row in cursor.fetchall()]
        cursor.execute(
            _RATINGS.format(where_r=where["where_r"], where_t=where["where_t"]), params
        )
        ratings = [tuple(row) for row in cursor.fetchall()]
    return studies, ratings


def tally_repair(*, studies: list, ratings: list) -> None:
    """Set each drifted tally from its rows, one transaction per tally row:
    the row is created if missing and locked first, then counted, so a writer
    in flight either committed before (counted) or its trigger waits for this
    and adds its rows on top (never counted twice, never lost)."""
    for study_id, *_ in studies:
        with transaction.atomic(durable=True):
            StudyTally.objects.get_or_create(study_id=study_id)
            StudyTally.objects.select_for_update(no_key=True).filter(
                study_id=study_id
            ).exists()
            StudyTally.objects.filter(study_id=study_id).update(
                images=Image.objects.filter(study_id=study_id).count()
            )
    for annotator_id, study_id, *_ in ratings:
        key = {"annotator_id": annotator_id, "study_id": study_id}
        with transaction.atomic(durable=True):
            RatingTally.objects.get_or_create(**key)
            RatingTally.objects.select_for_update(no_key=True).filter(**key).exists()
            rows = Rating.objects.filter(**key)
            RatingTally.objects.filter(**key).update(
                rated=rows.count(), valid=rows.filter(is_valid=True).count()
            )
