"""Reads for the annotation app."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from core.exceptions import InvalidInput

from .models import (
    Annotator,
    Assignment,
    Image,
    Participation,
    Rating,
    StreamItem,
    Study,
)
from .selectors_export import (  # noqa: F401 (the export's reads, re-exported)
    COLLECTED,
    export_annotator_queryset,
    export_collection_counts,
    export_consented_annotator_ids,
    export_consented_count,
    export_excluded_annotator_ids,
    export_image_queryset,
    export_list,
    export_rating_counts_by_image,
    export_rating_queryset,
    export_rating_span,
    export_ratings_in_split,
    export_score_counts,
    export_shown_again,
    export_stream_items,
)
from .splits import SPLITS, split_validate


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
    # One pass over the study's ratings for all three figures.
    counted = Rating.objects.filter(study=study).aggregate(
        valid=Count("pk", filter=Q(is_valid=True)),
        last_hour=Count(
            "pk",
            filter=Q(is_valid=True, created_at__gte=now - timedelta(hours=1))
            & COLLECTED,
        ),
        imported=Count("pk", filter=Q(is_valid=True) & ~COLLECTED),
        annotators=Count("annotator_id", distinct=True),
    )
    total_ratings, last_hour = counted["valid"], counted["last_hour"]
    target = study.raters_per_image * totals["images"]
    return {
        "study": study.pk,
        "images": totals["images"],
        "images_complete": totals["complete"],
        "ratings": total_ratings,
        "ratings_target": target,
        "fraction_complete": (total_ratings / target) if target else 0.0,
        "ratings_last_hour": last_hour,
        "ratings_imported": counted["imported"],
        "images_by_rating_count": {
            str(k): by_count.get(k, 0) for k in range(0, study.raters_per_image + 1)
        },
        "annotators": counted["annotators"],
    }


def annotator_by_public_id(*, public_id: str) -> Annotator | None:
    return Annotator.objects.filter(public_id=public_id).first()


def annotator_by_external_id(*, source: str, external_id: str) -> Annotator | None:
    if not external_id:
        return None
    return Annotator.objects.filter(source=source, external_id=external_id).first()


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


def study_annotator_rows(*, study: Study) -> list[dict]:
    """Every annotator who joined the study, with their counts and running quality
    statistics (three queries)."""
    from .models import AnnotatorQuality, Participation

    quality = {q.annotator_id: q for q in AnnotatorQuality.objects.filter(study=study)}
    counts = {
        a: (n, valid)
        for a, n, valid in Rating.objects.filter(study=study)
        .values_list("annotator_id")
        .annotate(n=Count("pk"), valid=Count("pk", filter=Q(is_valid=True)))
        .order_by()
    }
    rows = []
    for p in (
        Participation.objects.filter(study=study)
        .select_related("annotator")
        .order_by("annotator_id")
    ):
        n, valid = counts.get(p.annotator_id, (0, 0))
        rows.append(
            {
                "participation": p,
                "annotator": p.annotator,
                "quality": quality.get(p.annotator_id),
                "n_ratings": n,
                "n_valid": valid,
            }
        )
    return rows


def study_quality_rows(*, study: Study, flag: str = "") -> list:
    """Every annotator's running quality statistics in the study (one query, with
    the annotator), in annotator order; with ``flag``, only those carrying it
    (filtered here: a JSON containment lookup SQLite lacks)."""
    from .models import AnnotatorQuality

    rows = list(
        AnnotatorQuality.objects.filter(study=study)
        .select_related("annotator")
        .order_by("annotator_id")
    )
    return [q for q in rows if flag in (q.flags or [])] if flag else rows


def annotator_score_distribution(*, annotator: Annotator, study: Study) -> list:
    counts = dict(
        Rating.objects.filter(annotator=annotator, study=study)
        .values_list("score")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return [(v, counts.get(v, 0)) for v in range(study.scale_min, study.scale_max + 1)]


def study_alpha(*, study: Study) -> dict:
    """Krippendorff's alpha (interval) over valid ratings, for the study and per
    domain, from sums the database computes: per image its number of ratings m,
    Σx and Σx², then per domain the sums over images. For the interval metric
    Σ_{c,k} n_c n_k (c−k)² = 2(m Σx² − (Σx)²), so with n values in pairable
    images (m ≥ 2), D_o = Σ_u 2(m_u Σx²_u − (Σx_u)²)/(m_u − 1) / n and
    D_e = 2(n S2 − S1²) / (n(n − 1)); alpha = 1 − D_o/D_e. The same figure as
    the ``krippendorff`` package on the value counts (tests/annotation/
    test_alpha_sql.py), in one query returning a row per domain instead of
    every (image, score) pair to Python (1.7 s at 1.35 M ratings; issue 29)."""
    table = Rating._meta.db_table
    images = Image._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"""
            SELECT domain, COUNT(*),
                   SUM(CASE WHEN m >= 2 THEN 1 ELSE 0 END),
                   SUM(CASE WHEN m >= 2 THEN m ELSE 0 END),
                   SUM(CASE WHEN m >= 2 THEN s1 ELSE 0 END),
                   SUM(CASE WHEN m >= 2 THEN s2 ELSE 0 END),
                   SUM(CASE WHEN m >= 2
                       THEN 2.0 * (m * s2 - s1 * s1) / (m - 1) ELSE 0 END)
              FROM (SELECT r.image_id, COUNT(*) AS m,
                           SUM(r.score) AS s1, SUM(r.score * r.score) AS s2
                      FROM {table} r
                     WHERE r.study_id = %s AND r.is_valid
                     GROUP BY r.image_id) u
              JOIN {images} i ON i.id = u.image_id
             GROUP BY domain ORDER BY domain
            """,
            [study.pk],
        )
        rows = [(d, *(float(v or 0) for v in rest)) for d, *rest in cur.fetchall()]
    if not rows:
        return {"alpha": None, "images": 0, "by_domain": []}

    def alpha(sums) -> tuple[float | None, int]:
        n_images, units, n, s1, s2, within = sums
        expected = 2 * (n * s2 - s1 * s1)
        if units < 2 or expected <= 0:
            return None, int(n_images)
        return float(1 - (n - 1) * within / expected), int(n_images)

    overall, n = alpha([sum(r[k] for r in rows) for k in range(1, 7)])
    by_domain = [(r[0] or "(none)", *alpha(r[1:])) for r in sorted(rows)]
    return {"alpha": overall, "images": n, "by_domain": by_domain}


def study_retest(*, study: Study) -> dict:
    """Test-retest from answered repeats: correlation of first and second score,
    and the measured noise ceiling of per-annotator pairwise accuracy (how often
    the first scores order two repeated images the same way as the repeats)."""
    from .models import StreamItem

    pairs = list(
        StreamItem.objects.filter(
            study=study,
            kind=StreamItem.Kind.REPEAT,
            status=StreamItem.Status.ANSWERED,
        ).values_list("annotator_id", "source_rating__score", "score")
    )
    by_annotator: dict[int, list] = {}
    for annotator_id, first, second in pairs:
        by_annotator.setdefault(annotator_id, []).append((first, second))
    agree = total = 0
    for items in by_annotator.values():
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                d1 = items[i][0] - items[j][0]
                d2 = items[i][1] - items[j][1]
                if d1 == 0 or d2 == 0:
                    continue
                total += 1
                agree += (d1 > 0) == (d2 > 0)
    corr = None
    if len(pairs) >= 3:
        from .services.quality import pair_add, pair_corr

        sums: list = []
        for _, first, second in pairs:
            sums = pair_add(sums, first, second)
        corr = pair_corr(sums)
    return {
        "pairs": len(pairs),
        "annotators": len(by_annotator),
        "correlation": corr,
        "ceiling_pairwise": agree / total if total else None,
        "ceiling_pairs": total,
    }


@dataclass(frozen=True)
class UncountedAnswer:
    status: str  # pending, answered, skipped
    score: int | None
    answered_at: datetime | None


def uncounted_item_answers(*, item_ids: list[int]) -> dict[int, UncountedAnswer]:
    """The answers to uncounted stream items (see ``services.uncounted``)."""
    rows = StreamItem.objects.filter(pk__in=item_ids).values_list(
        "pk", "status", "score", "answered_at"
    )
    return {pk: UncountedAnswer(status, score, at) for pk, status, score, at in rows}
