"""Reads about a study's dealing (issue 27): its policy and settings, how its
assignments were dealt, and per annotator how uncertain their model still is
(``DealingState``, written with their ranking by ``rewardmodel.dealing``)."""

from django.db.models import Count

from .models import Assignment, DealingState, Participation, Rating, Study


def dealing_overview(*, study: Study) -> dict:
    """The study's policy, its settings, assignments by how they were dealt, and
    one row per member with a ranking state, most uncertain first."""
    dealt = dict(
        Assignment.objects.filter(study=study)
        .values_list("dealt_by")
        .annotate(n=Count("pk"))
        .order_by()
    )
    rated = dict(
        Rating.objects.filter(study=study)
        .values_list("annotator_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    members = Participation.objects.filter(study=study).values("annotator_id")
    states = (
        DealingState.objects.filter(study=study, annotator_id__in=members)
        .select_related("annotator")
        .order_by("-uncertainty", "annotator_id")
    )
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
        # Keys a template can read: how many assignments each way.
        "dealt": {
            "fullest_first": dealt.get("fullest-first", 0),
            "adaptive": dealt.get("adaptive", 0),
        },
        "annotators": rows,
    }


def dealing_counts(*, ratings) -> dict:
    """How the images behind these ratings were dealt (the export's card):
    adaptively, fullest first, or not dealt here (imported)."""
    from django.db.models import Q

    return ratings.order_by().aggregate(
        adaptive=Count("pk", filter=Q(assignment__dealt_by="adaptive")),
        fullest_first=Count("pk", filter=Q(assignment__dealt_by="fullest-first")),
    )
