"""Reads for the annotation app."""

from datetime import timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from .models import Annotator, Image, Rating, Study


def study_list_for(*, user) -> QuerySet[Study]:
    """Staff see every study; an annotator sees the studies they take part in."""
    if user.is_staff:
        return Study.objects.all()
    return Study.objects.filter(participations__annotator__user=user).distinct()


def study_progress(*, study: Study, now=None) -> dict:
    """Images by number of valid ratings, and the rating rate over the last hour."""
    now = now or timezone.now()
    by_count = dict(
        Image.objects.filter(study=study)
        .values_list("rating_count")
        .annotate(n=Count("pk"))
        .order_by()
    )
    totals = Image.objects.filter(study=study).aggregate(
        images=Count("pk"),
        complete=Count("pk", filter=Q(open_slots=0, lease_count=0)),
    )
    ratings = Rating.objects.filter(study=study, is_valid=True)
    last_hour = ratings.filter(created_at__gte=now - timedelta(hours=1)).count()
    total_ratings = ratings.count()
    target = study.raters_per_image * totals["images"]
    return {
        "study": study.pk,
        "images": totals["images"],
        "images_complete": totals["complete"],
        "ratings": total_ratings,
        "ratings_target": target,
        "fraction_complete": (total_ratings / target) if target else 0.0,
        "ratings_last_hour": last_hour,
        "images_by_rating_count": {
            str(k): by_count.get(k, 0) for k in range(0, study.raters_per_image + 1)
        },
        "annotators": Annotator.objects.filter(ratings__study=study).distinct().count(),
    }


def annotator_rated_count(*, annotator: Annotator, study: Study) -> int:
    return Rating.objects.filter(annotator=annotator, study=study).count()
