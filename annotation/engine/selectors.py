"""Reads of the engine: whether an annotator may get more, their progress, timed-out
assignments, ratings by evaluation split."""

from collections.abc import Iterable

from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce

from annotation.models import (
    Annotator,
    Assignment,
    Image,
    Rating,
    Study,
)
from annotation.splits import SPLITS, split_validate
from core.exceptions import InvalidInput


def annotator_may_get_more(*, annotator: Annotator, study: Study) -> bool:
    """Whether images this annotator was never dealt still lack ratings: when a
    claim came back empty below quota, they are leased by others right now and
    may come back, so the annotator should wait rather than be finished."""
    dealt = Assignment.objects.filter(image=OuterRef("pk"), annotator=annotator)
    return (
        Image.objects.filter(study=study, rating_count__lt=F("target_ratings"))
        .exclude(Exists(dealt))
        .exists()
    )


def annotator_progress(*, annotator: Annotator, study: Study) -> tuple[int, int]:
    """(images rated, images this annotator can rate at most) in a study.

    One query (two counting subqueries): it runs on every rating round-trip."""

    def counted(qs):
        n = qs.order_by().values("study").annotate(n=Count("pk")).values("n")
        return Coalesce(Subquery(n, output_field=IntegerField()), 0)

    mine = Rating.objects.filter(annotator=annotator, study=OuterRef("pk"))
    rated, pool = (
        Study.objects.filter(pk=study.pk)
        .annotate(
            rated=counted(mine),
            pool=counted(Image.objects.filter(study=OuterRef("pk"))),
        )
        .values_list("rated", "pool")
        .get()
    )
    return rated, max(rated, min(study.quota_per_annotator, pool))


def assignment_timed_out(*, assignment_id: int, annotator: Annotator) -> bool:
    return Assignment.objects.filter(
        pk=assignment_id, annotator=annotator, status=Assignment.Status.EXPIRED
    ).exists()


def ratings_in_split(
    *, study: Study | int, split: str | Iterable[str], valid_only: bool = True
) -> QuerySet[Rating]:
    """Ratings of a study in one split or several (``annotation.splits``).

    The one way training, evaluation and export read a split. ``valid_only``
    leaves out invalidated ratings and every rating of an excluded annotator.
    """
    names = [split] if isinstance(split, str) else list(split)
    for name in names:
        try:
            split_validate(name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    study_id = study if isinstance(study, int) else study.pk
    qs = Rating.objects.filter(study_id=study_id, split__in=names)
    if valid_only:
        qs = qs.filter(is_valid=True).exclude(
            annotator__status=Annotator.Status.EXCLUDED
        )
    return qs


def split_counts(*, study: Study | int) -> dict[str, int]:
    """Valid ratings per split (every split named, zeros included)."""
    study_id = study if isinstance(study, int) else study.pk
    got = dict(
        Rating.objects.filter(study_id=study_id, is_valid=True)
        .exclude(annotator__status=Annotator.Status.EXCLUDED)
        .values_list("split")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {name: got.get(name, 0) for name in SPLITS}
