"""What a staff action would do, before it is done: the numbers the
confirmation step shows (``core.confirm``).

Exclusion counts are those ``engine.annotator_release_slots`` acts on: valid
ratings (invalidated) and leases not yet finished (ended, overdue ones
included), each giving one slot back to its image.
"""

from dataclasses import dataclass

from django.db.models import Count

from annotation.models import (
    Annotator,
    Assignment,
    AttentionCheck,
    Participation,
    Rating,
    StreamItem,
    Study,
)


@dataclass(frozen=True)
class StudyEffect:
    """Excluding the annotator from ``study``: what changes there."""

    study: Study
    ratings: int  # valid ratings that become invalid
    leases: int  # live leases that end

    @property
    def slots(self) -> int:
        """Slots reopened in the study (each invalid rating or ended lease)."""
        return self.ratings + self.leases


def _per_study(qs, study: Study | None) -> dict[int, int]:
    if study is not None:
        qs = qs.filter(study=study)
    return dict(qs.values_list("study_id").annotate(n=Count("pk")).order_by())


def exclusion_effects(
    *, annotator: Annotator, study: Study | None = None
) -> list[StudyEffect]:
    """Per study, what excluding ``annotator`` would invalidate and reopen: in
    ``study`` only, or (None) in every study they take part in or hold rows in,
    by study name. A study with nothing to reopen is listed when the annotator
    still takes part in it (the exclusion ends that participation too)."""
    ratings = _per_study(
        Rating.objects.filter(annotator=annotator, is_valid=True), study
    )
    leases = _per_study(
        Assignment.objects.filter(annotator=annotator, status=Assignment.Status.LEASED),
        study,
    )
    active = Participation.objects.filter(
        annotator=annotator, status=Participation.Status.ACTIVE
    )
    if study is not None:
        active = active.filter(study=study)
    ids = set(ratings) | set(leases) | set(active.values_list("study_id", flat=True))
    if study is not None:
        ids.add(study.pk)
    return [
        StudyEffect(s, ratings.get(s.pk, 0), leases.get(s.pk, 0))
        for s in Study.objects.filter(pk__in=ids).order_by("name", "pk")
    ]


def participation_status(*, annotator: Annotator, study: Study) -> str | None:
    """The annotator's status in this study (None: never took part)."""
    if annotator.status == Annotator.Status.EXCLUDED:
        return Participation.Status.EXCLUDED
    return (
        Participation.objects.filter(annotator=annotator, study=study)
        .values_list("status", flat=True)
        .first()
    )


@dataclass(frozen=True)
class CheckRemoval:
    """Removing an attention check (``attention_check_remove``)."""

    check: AttentionCheck
    withdrawn: int  # dealt, not shown yet: withdrawn
    kept: int  # answered, skipped or on screen: kept, so the check is retired
    annotators: int  # people behind the kept items

    @property
    def deleted(self) -> bool:
        return self.kept == 0


def check_removal_effect(*, study: Study, check_id: int) -> CheckRemoval | None:
    """What removing the check would do (None: no such check in the study)."""
    check = AttentionCheck.objects.filter(pk=check_id, study=study).first()
    if check is None:
        return None
    items = StreamItem.objects.filter(check_item=check)
    unshown = dict(status=StreamItem.Status.PENDING, shown_at__isnull=True)
    kept = items.exclude(**unshown)
    return CheckRemoval(
        check=check,
        withdrawn=items.filter(**unshown).count(),
        kept=kept.count(),
        annotators=kept.values("annotator_id").distinct().count(),
    )
