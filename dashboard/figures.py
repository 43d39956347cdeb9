"""Study-wide figures that need a pass over a study's ratings or assignments
(Krippendorff's alpha, assignments by how they were dealt), computed off the
request (issue 29: 0.4-0.8 s a first render at 1.35 M ratings, once a minute
per web process while ratings arrive).

A Celery task (``dashboard.refresh_study_figures``) computes them with
``annotation``'s own selectors into the study's ``StudyFigures`` row, which
every web process reads (one indexed read a render). The beat asks for a
refresh of every study that has a row once a minute (``dashboard.refresh_figures``);
the refresh reads the study's fingerprint first and computes again only when it
changed (otherwise it marks the kept figures as current at that time). A page
that finds no row, or one older than ``STALE_S``, queues a refresh itself, at
most one per ``STALE_S`` per study, and shows what it has: the figures "as of"
when they were last known current, or "being computed"."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from annotation.engine.models import Assignment
from annotation.engine.selectors import dealing_dealt
from annotation.quality.selectors import study_alpha
from annotation.studies.models import Study
from annotation.studies.selectors import study_fingerprint

from .models import StudyFigures

logger = logging.getLogger(__name__)

REFRESH_S = 60  # the beat's period: how often a viewed study is looked at
STALE_S = 2 * REFRESH_S  # a page asks for a refresh of figures older than this


@dataclass(frozen=True)
class Figures:
    alpha: dict | None  # study_alpha's answer; None while being computed
    dealt: dict | None  # dealing_dealt's answer; None while being computed
    as_of: datetime | None  # when they were last known current
    requested_at: datetime | None  # when a refresh was last queued

    @property
    def pending(self) -> bool:
        return self.alpha is None


def figures_get(*, study: Study) -> Figures:
    """The study's kept figures (one query), queueing a refresh when there are
    none yet or they are older than ``STALE_S`` (then one or two more: the
    request for a refresh, and the row made on a study's first view)."""
    row = StudyFigures.objects.filter(study=study).first()
    now = timezone.now()
    if row is None or row.value is None or row.checked_at < now - _stale():
        requested = _request(study, row, now)
        if row is None or requested:
            row = row or StudyFigures(study=study)
            row.requested_at = now
    value = row.value or {}
    return Figures(
        alpha=value.get("alpha"),
        dealt=value.get("dealt"),
        as_of=row.checked_at if row.value is not None else None,
        requested_at=row.requested_at,
    )


def _stale() -> timedelta:
    return timedelta(seconds=STALE_S)


def _request(study: Study, row: StudyFigures | None, now: datetime) -> bool:
    """Queue a refresh unless one was queued within ``STALE_S``: the row made if
    missing (an insert that ignores a conflict), then a conditional update, so
    of concurrent renders exactly one queues. Two statements, no savepoint."""
    if row is None:
        StudyFigures.objects.bulk_create(
            [StudyFigures(study=study)], ignore_conflicts=True
        )
    recent = Q(requested_at__gte=now - _stale())
    if (
        not StudyFigures.objects.filter(pk=study.pk)
        .exclude(recent)
        .update(requested_at=now)
    ):
        return False
    transaction.on_commit(lambda: _queue(study.pk))
    return True


def _queue(study_id: int) -> None:
    from .tasks import refresh_study_figures

    try:
        refresh_study_figures.delay(study_id)
    except BrokerError:
        # The page still renders ("being computed"); the beat asks again.
        logger.warning("figures of study %s: broker unreachable", study_id)


def figures_fingerprint(*, study: Study) -> list:
    """What changes when alpha or the dealing counts may have: the study's
    fingerprint (its images' rating and lease counters, its newest rating)
    and its newest assignment."""
    newest = (
        Assignment.objects.filter(study=study)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    return [*study_fingerprint(study=study), newest]


def figures_refresh(*, study_id: int) -> str:
    """Compute the study's figures into its row (the task's body), unless the
    study is unchanged since the kept ones (then only ``checked_at`` moves).
    A computation that began before the kept figures' never overwrites them."""
    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        return "no such study"
    started = timezone.now()
    fingerprint = figures_fingerprint(study=study)
    row, _ = StudyFigures.objects.get_or_create(study=study)
    if row.value is not None and row.fingerprint == fingerprint:
        StudyFigures.objects.filter(pk=study.pk, checked_at__lt=started).update(
            checked_at=started
        )
        return "unchanged"
    value = {"alpha": study_alpha(study=study), "dealt": dealing_dealt(study=study)}
    older = Q(computed_at__isnull=True) | Q(computed_at__lt=started)
    written = (
        StudyFigures.objects.filter(pk=study.pk)
        .filter(older)
        .update(
            value=value,
            fingerprint=fingerprint,
            computed_at=started,
            checked_at=started,
        )
    )
    return "computed" if written else "superseded"


def figures_refresh_all() -> int:
    """Queue a refresh of every study whose figures are kept (the beat's task):
    studies nobody has looked at cost nothing."""
    ids = list(StudyFigures.objects.values_list("study_id", flat=True))
    for study_id in ids:
        _queue(study_id)
    return len(ids)
