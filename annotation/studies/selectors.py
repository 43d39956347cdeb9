"""Reads for studies and entry: study lists and progress, annotators by id,
participations, the staff dashboard's study reads."""

from datetime import timedelta

from django.db.models import (
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from annotation.datasets.selectors import COLLECTED
from annotation.models import (
    Annotator,
    Assignment,
    Image,
    Participation,
    Rating,
    Study,
)


def study_list_for(*, user) -> QuerySet[Study]:
    """Staff see every study; an annotator sees the studies they take part in."""
    if user.is_staff:
        return Study.objects.all()
    return Study.objects.filter(
        participations__annotator__user=user,
        participations__consented_at__isnull=False,
    ).distinct()


def study_progress(*, study: Study, now=None) -> dict:
    """Images by number of valid ratings, and the ratings collected here in the
    last hour (``COLLECTED``: an imported rating keeps its dataset's own time and
    says nothing about who is rating now)."""
    now = now or timezone.now()
    by_count, complete = {}, 0
    for k, n, done in (
        Image.objects.filter(study=study)
        .values_list("rating_count")
        .annotate(
            n=Count("pk"), done=Count("pk", filter=Q(open_slots=0, lease_count=0))
        )
        .order_by()
    ):
        by_count[k] = n
        complete += done
    totals = {"images": sum(by_count.values()), "complete": complete}
    # No pass over the study's ratings (issue 29: 3 s at 1.35 M ratings). The
    # valid ratings are the images' counters (``rating_count``: the valid
    # ratings of the image, kept by both engine paths and checked by
    # ``integrity_check``); the last hour is a range of ``rating_by_study_time``;
    # imported ratings (no assignment) are found through the assignment's unique
    # index, which holds the NULLs too; the annotators who rated are one index
    # probe each (``rating_by_annotator``).
    total_ratings = sum(int(k) * n for k, n in by_count.items())
    valid = Rating.objects.filter(study=study, is_valid=True)
    last_hour = (
        valid.filter(COLLECTED, created_at__gte=now - timedelta(hours=1))
        .order_by()
        .count()
    )
    imported = valid.filter(assignment__isnull=True).order_by().count()
    target = study.raters_per_image * totals["images"]
    return {
        "study": study.pk,
        "images": totals["images"],
        "images_complete": totals["complete"],
        "ratings": total_ratings,
        "ratings_target": target,
        "fraction_complete": (total_ratings / target) if target else 0.0,
        "ratings_last_hour": last_hour,
        "ratings_imported": imported,
        "images_by_rating_count": {
            str(k): by_count.get(k, 0) for k in range(0, study.raters_per_image + 1)
        },
        "annotators": _annotators_who_rated(study),
    }


def _annotators_who_rated(study: Study) -> int:
    """How many annotators have a rating in the study: one probe of
    ``rating_by_annotator`` (annotator, study) per annotator, stopped at the
    first row (PostgreSQL plans it as a nested-loop semi-join, 37 ms for
    10,000 annotators and 1.35 M ratings); the cost follows the annotators,
    not the ratings."""
    return Annotator.objects.filter(
        Exists(Rating.objects.filter(study=study, annotator=OuterRef("pk")))
    ).count()


def study_fingerprint(*, study: Study) -> tuple:
    """What changes whenever the study's valid ratings or live leases do: the
    sums of its images' counters and its newest rating (one query, no pass over
    the ratings: ``rating_by_study_time`` read backwards for one row)."""
    newest = (
        Rating.objects.filter(study=OuterRef("pk"))
        .order_by("-created_at", "-pk")
        .values("pk")[:1]
    )
    row = (
        Study.objects.filter(pk=study.pk)
        .annotate(
            fp_ratings=Sum("images__rating_count"),
            fp_leases=Sum("images__lease_count"),
            fp_newest=Subquery(newest),
        )
        .values_list("fp_ratings", "fp_leases", "fp_newest")
        .first()
    )
    return tuple(row) if row else ()


def annotator_by_public_id(*, public_id: str) -> Annotator | None:
    return Annotator.objects.filter(public_id=public_id).first()


def annotator_by_external_id(*, source: str, external_id: str) -> Annotator | None:
    if not external_id:
        return None
    return Annotator.objects.filter(source=source, external_id=external_id).first()


def participation_of(*, annotator: Annotator, study: Study) -> Participation | None:
    return Participation.objects.filter(annotator=annotator, study=study).first()


# --- staff dashboard reads ----------------------------------------------------------
#
# Each returns plain data in a fixed, small number of queries whatever the size of
# the study (asserted in tests/dashboard); the dashboard app renders them.

ACTIVE_WINDOW = timedelta(minutes=10)
RATE_WINDOW_HOURS = 6  # the projection's rate: mean ratings per hour over these


def study_overview_list() -> list[dict]:
    """Every study with its state and rating progress (one query)."""
    rows = (
        Study.objects.annotate(
            n_images=Count("images"),
            n_ratings=Coalesce(Sum("images__rating_count"), 0),
            n_complete=Count(
                "images",
                filter=Q(images__rating_count__gte=F("images__target_ratings")),
            ),
        )
        .order_by("-created_at")
        .values(
            "pk",
            "name",
            "slug",
            "status",
            "raters_per_image",
            "n_images",
            "n_ratings",
            "n_complete",
        )
    )
    out = []
    for r in rows:
        target = r["n_images"] * r["raters_per_image"]
        out.append({**r, "target": target, "percent": _percent(r["n_ratings"], target)})
    return out


def _percent(part: float, whole: float) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def study_dashboard(*, study: Study, now=None, hours: int = 48) -> dict:
    """Progress of one study: images by valid ratings (0..target), completion,
    ratings per hour over the last ``hours``, annotators active now, and the
    projected completion at the recent rate. Every rate and "active now" counts
    ratings collected here only (``COLLECTED``); each figure's window is
    returned with it so the page can say which one it uses."""
    now = now or timezone.now()
    progress = study_progress(study=study, now=now)
    since = now - timedelta(hours=hours)
    per_hour = dict(
        Rating.objects.filter(COLLECTED, study=study, is_valid=True)
        .filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("pk"))
        .order_by()
    )
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    series = [
        (start + timedelta(hours=i), per_hour.get(start + timedelta(hours=i), 0))
        for i in range(hours)
    ]
    # Two indexed reads rather than one OR across two joins (which PostgreSQL
    # answers by joining every rating of the study).
    leasing = set(
        Assignment.objects.filter(
            study=study, status=Assignment.Status.LEASED, expires_at__gt=now
        ).values_list("annotator_id", flat=True)
    )
    rating = set(
        Rating.objects.filter(COLLECTED, study=study)
        .filter(created_at__gte=now - ACTIVE_WINDOW)
        .values_list("annotator_id", flat=True)
        .distinct()
    )
    active = len(leasing | rating)
    remaining = max(0, progress["ratings_target"] - progress["ratings"])
    recent = sum(n for _, n in series[-RATE_WINDOW_HOURS:]) / RATE_WINDOW_HOURS
    eta = None
    if remaining and recent > 0:
        eta = now + timedelta(hours=remaining / recent)
    return {
        **progress,
        "histogram": [
            (int(k), v) for k, v in progress["images_by_rating_count"].items()
        ],
        "per_hour": series,
        "per_hour_hours": hours,
        "active_now": active,
        "active_window_minutes": int(ACTIVE_WINDOW.total_seconds() // 60),
        "rate_window_hours": RATE_WINDOW_HOURS,
        "remaining": remaining,
        "rate_recent": recent,
        "projected_completion": eta,
        "percent": _percent(progress["ratings"], progress["ratings_target"]),
    }


# The correlations ``study_annotator_keys`` reads computed, by the sums they need.
CORRELATIONS = {"agreement": "loo_sums", "retest": "retest_sums"}


def study_annotator_keys(*, study: Study, fields: tuple = ()) -> list[dict]:
    """Every annotator who joined the study, light: what the dashboard's table
    sorts, filters and searches on (two queries, no model instances, no rating
    read), in annotator order. ``n_ratings`` is the ratings collected here as
    the submit counts them (``AnnotatorQuality.n_ratings``, 0 without a row);
    ``fields`` names further ``AnnotatorQuality`` fields to read (``flags``,
    ``loo_sums``, ``retest_sums``, ``time_hist``) or correlations the database
    computes from their sums (``agreement``, ``retest``: ``pair_corr`` of
    ``loo_sums``, ``retest_sums``), ``None`` without a row."""
    from annotation.models import AnnotatorQuality, Participation
    from annotation.quality.selectors import pair_corr_expression

    computed = {
        f: pair_corr_expression(CORRELATIONS[f]) for f in fields if f in CORRELATIONS
    }
    quality = {
        row[0]: row[1:]
        for row in AnnotatorQuality.objects.filter(study=study)
        .annotate(**computed)
        .values_list("annotator_id", "n_ratings", *fields)
    }
    missing = (0, *(None for _ in fields))
    rows = []
    for a, public_id, external_id, own, here in (
        Participation.objects.filter(study=study)
        .order_by("annotator_id")
        .values_list(
            "annotator_id",
            "annotator__public_id",
            "annotator__external_id",
            "annotator__status",
            "status",
        )
    ):
        q = quality.get(a, missing)
        row = {
            "id": a,
            "public_id": public_id,
            "external_id": external_id,
            # In this study: excluded here (their participation) or their own.
            "status": here if here == Participation.Status.EXCLUDED else own,
            "n_ratings": q[0],
            "has_quality": a in quality,
        }
        row.update(zip(fields, q[1:], strict=True))
        rows.append(row)
    return rows


def study_annotator_rows(*, study: Study, annotator_ids: list[int]) -> list[dict]:
    """The given annotators of the study (the dashboard's page of them, in the
    order given) with their participation, running quality statistics and
    exact counts of their ratings here, all and valid (three queries, each
    bounded by the annotators asked for; the counts are the ones the database
    keeps in ``RatingTally``, one row per annotator: no rating is read)."""
    from annotation.models import AnnotatorQuality, Participation, RatingTally

    quality = {
        q.annotator_id: q
        for q in AnnotatorQuality.objects.filter(
            study=study, annotator_id__in=annotator_ids
        )
    }
    counts = {
        a: (n, valid)
        for a, n, valid in RatingTally.objects.filter(
            study=study, annotator_id__in=annotator_ids
        ).values_list("annotator_id", "rated", "valid")
    }
    found = {
        p.annotator_id: p
        for p in Participation.objects.filter(
            study=study, annotator_id__in=annotator_ids
        ).select_related("annotator")
    }
    rows = []
    for a in annotator_ids:
        if a not in found:
            continue
        p = found[a]
        n, valid = counts.get(a, (0, 0))
        rows.append(
            {
                "participation": p,
                "annotator": p.annotator,
                "quality": quality.get(a),
                "n_ratings": n,
                "n_valid": valid,
            }
        )
    return rows
