"""The checks every claim and submit makes under the annotator's lock (shared by
``engine`` and ``ratings``)."""

from django.db import connection

from annotation.models import Annotator, Participation, Study
from core.exceptions import AnnotatorNotActive, NotFound, StudyNotOpen


def status_lock_share(annotator: Annotator) -> None:
    """``FOR SHARE`` on the annotator and its status as of now (not as loaded at
    authentication): a status change in flight finishes first, and none can start
    until this transaction ends. The ORM has no FOR SHARE, hence the SQL."""
    with connection.cursor() as cursor:
        lock = " FOR SHARE" if connection.features.has_select_for_update else ""
        cursor.execute(
            f"SELECT status FROM {Annotator._meta.db_table} WHERE id = %s{lock}",
            [annotator.pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise NotFound("No such annotator.")
    annotator.status = row[0]


def can_work_check(annotator: Annotator, study: Study) -> None:
    if annotator.status != Annotator.Status.ACTIVE:
        raise AnnotatorNotActive(
            {
                "paused": "Your account is paused. Please contact the researchers.",
                "banned": "Your account has been blocked from this platform.",
                "excluded": "Your account has been excluded from this study.",
            }.get(annotator.status, "Your account is not active.")
        )
    if study.status != Study.Status.OPEN:
        raise StudyNotOpen(f"The study '{study.name}' is not open for ratings.")


def participation_check(status: str | None) -> None:
    """Refuse a participation excluded from its study (``participation_exclude``:
    it waits for the annotator's lock, which the caller holds ``FOR SHARE``)."""
    if status == Participation.Status.EXCLUDED:
        raise AnnotatorNotActive("You have been excluded from this study.")
