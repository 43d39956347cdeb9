"""Reads of the engine: whether an annotator may get more, their progress, timed-out
assignments, ratings by evaluation split."""

from collections.abc import Iterable

from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce

from annotation.engine.item_tokens import IMAGE, MEDIA, item_resolve, item_token
from annotation.models import (
    Annotator,
    Assignment,
    DealingState,
    Image,
    Participation,
    Rating,
    RatingTally,
    Study,
    StudyTally,
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

    One query, two rows read whatever the study's size or the annotator's
    history: the counts the database keeps (``RatingTally``, ``StudyTally``,
    migration 0025), as ``palate_claim`` reads them; it runs on every rating
    round-trip."""

    def kept(qs, field):
        return Coalesce(Subquery(qs.values(field)[:1], output_field=IntegerField()), 0)

    tally = RatingTally.objects.filter(annotator=annotator, study=OuterRef("pk"))
    images = StudyTally.objects.filter(study=OuterRef("pk"))
    rated, pool = (
        Study.objects.filter(pk=study.pk)
        .annotate(rated=kept(tally, "rated"), pool=kept(images, "images"))
        .values_list("rated", "pool")
        .get()
    )
    return rated, max(rated, min(study.quota_per_annotator, pool))


def annotator_rated(*, annotator_id: int, study_id: int) -> int:
    """How many ratings (valid or not) the annotator has in the study: the
    count the database keeps (``RatingTally``), one row read."""
    rated = (
        RatingTally.objects.filter(annotator_id=annotator_id, study_id=study_id)
        .values_list("rated", flat=True)
        .first()
    )
    return rated or 0


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


def image_token(*, image_id: int, purpose: bytes = MEDIA) -> str:
    """An opaque token naming a study image outside the rating stream (kind
    ``IMAGE``; the taste portrait): with ``MEDIA`` its picture is
    ``/media/i/<token>`` like every picture a participant sees; another purpose
    names it in a form. Never usable in the rating and skip URLs."""
    return item_token(kind=IMAGE, pk=image_id, purpose=purpose)


def image_token_resolve(*, token: str, purpose: bytes) -> int:
    """The image an ``image_token`` of this purpose names; NotFound otherwise."""
    return item_resolve(token, purpose=purpose, kinds=(IMAGE,))[1]


# --- dealing (issue 27): the policy, how images were dealt, model uncertainty


def dealing_dealt(*, study: Study) -> dict:
    """How many of the study's assignments were dealt each way (one pass over
    them; the dashboard counts them off the request: ``dashboard/figures.py``)."""
    dealt = dict(
        Assignment.objects.filter(study=study)
        .values_list("dealt_by")
        .annotate(n=Count("pk"))
        .order_by()
    )
    # Keys a template can read: how many assignments each way.
    return {
        "fullest_first": dealt.get("fullest-first", 0),
        "adaptive": dealt.get("adaptive", 0),
    }


def dealing_overview(*, study: Study, dealt: dict | None = None) -> dict:
    """The study's policy, its settings, assignments by how they were dealt
    (``dealt``, else ``dealing_dealt``), and one row per member with a ranking
    state, most uncertain first, with their ratings in the study (the count
    the database keeps, ``RatingTally.rated``: no rating read)."""
    members = Participation.objects.filter(study=study).values("annotator_id")
    ranked = DealingState.objects.filter(study=study, annotator_id__in=members)
    rated = dict(
        RatingTally.objects.filter(
            study=study, annotator_id__in=ranked.values("annotator_id")
        ).values_list("annotator_id", "rated")
    )
    states = ranked.select_related("annotator").order_by("-uncertainty", "annotator_id")
    rows = [
        {
            "annotator_id": s.annotator_id,
            "public_id": s.annotator.public_id,
            "ratings": rated.get(s.annotator_id, 0),
            "uncertainty": s.uncertainty,
            "ranked": s.ranked,
            "how": s.how,
            "version": s.version_id,
            "refreshed_at": s.refreshed_at,
        }
        for s in states
    ]
    return {
        "policy": study.dealing_policy,
        "warmup": study.dealing_warmup,
        "band": study.dealing_band,
        "dealt": dealt if dealt is not None else dealing_dealt(study=study),
        "annotators": rows,
    }


def dealing_counts(*, ratings) -> dict:
    """How the images behind these ratings were dealt (the export's card):
    adaptively, fullest first, or not dealt here (imported)."""
    return ratings.order_by().aggregate(
        adaptive=Count("pk", filter=Q(assignment__dealt_by="adaptive")),
        fullest_first=Count("pk", filter=Q(assignment__dealt_by="fullest-first")),
    )
