"""Reads for the dataset export and its card (``annotation.datasets.services.export``,
``export_card``). Re-exported by ``annotation.selectors``.

The card states only what these reads find in the exported data: how many
ratings were collected here or imported, how many carry a time on item, what
each annotator was shown again, who the annotators are by source.
"""

from django.db.models import (
    Avg,
    Count,
    Exists,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
)

from annotation.models import (
    Annotator,
    Export,
    Image,
    Participation,
    Rating,
    StreamItem,
    Study,
)
from annotation.splits import split_validate

# A rating collected here answers an assignment the engine dealt; an imported
# one (``import_dataset``, ``ratings_import``) has none.
COLLECTED = Q(assignment__isnull=False)
# The id ``Annotator`` draws (``a-`` and 12 hex digits); an import may bring others.
PSEUDONYM_PATTERN = r"^a-[0-9a-f]{12}$"


def export_rating_queryset(
    *, study: Study, include_excluded: bool = False, include_invalid: bool = False
) -> QuerySet[Rating]:
    """The ratings an export carries. By default only valid ratings of annotators
    who are not excluded (everywhere, or from this study: their participation);
    ``include_excluded`` keeps excluded annotators with their
    (invalidated) ratings, ``include_invalid`` keeps every invalid rating.
    Annotators who were erased (the right to be forgotten) are never exported,
    whatever the flags."""
    qs = Rating.objects.filter(study=study, annotator__erased_at__isnull=True)
    excluded = Q(annotator__status=Annotator.Status.EXCLUDED) | Q(
        annotator_id__in=export_excluded_annotator_ids_query(study=study)
    )
    if not include_excluded:
        qs = qs.exclude(excluded)
    if not include_invalid:
        qs = (
            qs.filter(Q(is_valid=True) | excluded)
            if include_excluded
            else qs.filter(is_valid=True)
        )
    return qs


def export_image_queryset(*, study: Study) -> QuerySet[Image]:
    """Every image of the study, in id order (unrated ones too: the dataset says
    which images were shown, and a round trip restores them all)."""
    return Image.objects.filter(study=study).order_by("pk")


def export_annotator_queryset(*, ratings: QuerySet[Rating]) -> QuerySet[Annotator]:
    """Annotators with at least one exported rating, by pseudonymous id (their
    counts: ``export_rating_counts_by_annotator``)."""
    return Annotator.objects.filter(pk__in=ratings.values("annotator")).order_by(
        "public_id"
    )


def export_rating_counts_by_annotator(*, ratings: QuerySet[Rating]) -> dict[int, int]:
    """{annotator id: exported ratings}, in one pass over the ratings (a count
    per annotator, correlated, read them one annotator at a time through the
    index: 11.5 s of the export's 55-70 s at 1.35 M ratings; issue 29)."""
    return dict(
        ratings.order_by()
        .values_list("annotator_id")
        .annotate(n=Count("pk"))
        .values_list("annotator_id", "n")
    )


def export_excluded_annotator_ids_query(*, study: Study) -> QuerySet:
    """Annotators excluded from this study only (``participation_exclude``)."""
    return Participation.objects.filter(
        study=study, status=Participation.Status.EXCLUDED
    ).values("annotator_id")


def export_excluded_annotator_ids(*, study: Study) -> set[int]:
    return set(
        export_excluded_annotator_ids_query(study=study).values_list(
            "annotator_id", flat=True
        )
    )


def export_consented_annotator_ids(*, study: Study) -> set[int]:
    """Annotators who consented in this study (only they get demographics)."""
    return set(
        Participation.objects.filter(study=study, consented_at__isnull=False)
        .values_list("annotator_id", flat=True)
        .iterator(chunk_size=5000)
    )


def export_score_counts(*, ratings: QuerySet[Rating]):
    """(image id, image domain, score, count) rows for the agreement statistic,
    in image order."""
    return (
        ratings.order_by()
        .values_list("image_id", "image__domain", "score")
        .annotate(n=Count("pk"))
        .order_by("image_id", "score")
        .iterator(chunk_size=10000)
    )


def export_list(*, study: Study | None = None) -> QuerySet[Export]:
    qs = Export.objects.select_related("study", "created_by")
    return qs.filter(study=study) if study is not None else qs


def export_rating_counts_by_image(*, ratings: QuerySet[Rating]) -> dict[int, int]:
    """{image id: exported ratings}: one small row per image."""
    return dict(
        ratings.order_by()
        .values_list("image_id")
        .annotate(n=Count("pk"))
        .values_list("image_id", "n")
    )


def export_rating_span(*, ratings: QuerySet[Rating]) -> dict:
    """First and last rating time and the mean score (for the dataset card)."""
    return ratings.order_by().aggregate(
        first=Min("created_at"), last=Max("created_at"), mean=Avg("score")
    )


def export_ratings_in_split(*, ratings: QuerySet[Rating], split: str):
    """The exported ratings in one of the five splits, as stored on each rating
    (``annotation.splits``: the same assignment the reward model uses)."""
    return ratings.filter(split=split_validate(split))


def export_collection_counts(*, ratings: QuerySet[Rating]) -> dict:
    """How the exported ratings came in: collected here or imported, each with
    how many carry a time on item; ratings per annotator (sorted); annotators
    whose id is not one Palate drew; annotators who rated here, by source (two
    queries and one small list of per-annotator counts)."""
    timed = Q(time_on_item_ms__isnull=False)
    counts = ratings.order_by().aggregate(
        collected=Count("pk", filter=COLLECTED),
        collected_timed=Count("pk", filter=COLLECTED & timed),
        imported=Count("pk", filter=~COLLECTED),
        imported_timed=Count("pk", filter=~COLLECTED & timed),
    )
    annotators = Annotator.objects.filter(pk__in=ratings.values("annotator"))
    by_source = dict(
        annotators.filter(pk__in=ratings.filter(COLLECTED).values("annotator"))
        .values_list("source")
        .annotate(n=Count("pk"))
        .order_by("source")
    )
    per_annotator = sorted(
        ratings.order_by()
        .values("annotator")
        .annotate(n=Count("pk"))
        .values_list("n", flat=True)
    )
    other_ids = annotators.exclude(public_id__regex=PSEUDONYM_PATTERN).count()
    return {
        **counts,
        "per_annotator": per_annotator,
        "sources": by_source,
        "ids_not_drawn": other_ids,
    }


def export_consented_count(*, study: Study, ratings: QuerySet[Rating]) -> int:
    """Annotators with a rating collected here who consented in this study."""
    return Participation.objects.filter(
        study=study,
        consented_at__isnull=False,
        annotator__in=ratings.filter(COLLECTED).values("annotator"),
    ).count()


def export_shown_again(*, study: Study, ratings: QuerySet[Rating]) -> dict:
    """What the exported annotators were shown between counted images (stream
    items shown to them in this study, by kind), and how many of those showed
    an image the same annotator had rated: the card's "shown twice" (one
    query). Their answers are never ratings, so never exported."""
    shown = Q(shown_at__isnull=False) | Q(
        status__in=[StreamItem.Status.ANSWERED, StreamItem.Status.SKIPPED]
    )
    rated = Rating.objects.filter(
        image=OuterRef("image"), annotator=OuterRef("annotator")
    )
    return (
        StreamItem.objects.filter(
            shown, study=study, annotator__in=ratings.values("annotator")
        )
        .annotate(rated_before=Exists(rated))
        .aggregate(
            attention=Count("pk", filter=Q(kind=StreamItem.Kind.ATTENTION)),
            repeat=Count("pk", filter=Q(kind=StreamItem.Kind.REPEAT)),
            blind=Count("pk", filter=Q(kind=StreamItem.Kind.BLIND)),
            rated_image_again=Count("pk", filter=Q(rated_before=True)),
        )
    )


def export_stream_items(*, study: Study, ratings: QuerySet[Rating]):
    """The uncounted items (checks, repeats, blind items) shown to the annotators
    this export carries, answered or skipped, in id order."""
    return StreamItem.objects.filter(
        study=study,
        annotator_id__in=ratings.values("annotator_id"),
        status__in=(StreamItem.Status.ANSWERED, StreamItem.Status.SKIPPED),
    ).order_by("pk")
