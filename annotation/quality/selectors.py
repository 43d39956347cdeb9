"""Reads of quality control: QC rows and score distributions for the dashboard,
agreement (alpha) and test-retest, the answers to uncounted items."""

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Case, Count, FloatField, Q, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Sqrt
from django.db.models.lookups import GreaterThan, GreaterThanOrEqual, IsNull

from annotation.models import (
    Annotator,
    Image,
    Rating,
    StreamItem,
    Study,
)


def study_quality_rows(*, study: Study, flag: str = "") -> list:
    """Every annotator's running quality statistics in the study (one query, with
    the annotator), in annotator order; with ``flag``, only those carrying it
    (filtered here: a JSON containment lookup SQLite lacks)."""
    from annotation.models import AnnotatorQuality

    rows = list(
        AnnotatorQuality.objects.filter(study=study)
        .select_related("annotator")
        .order_by("annotator_id")
    )
    return [q for q in rows if flag in (q.flags or [])] if flag else rows


class _Correlation(Case):
    """A CASE whose value both backends already return as a Python float (or
    NULL): Django's per-row float() converter, a third of the sort's cost at
    10,000 rows, is left out."""

    convert_value = staticmethod(Case._convert_value_noop)


def pair_corr_expression(field: str):
    """``services.pair_corr`` of the running sums in the JSON list ``field``
    (n, Σx, Σy, Σx², Σy², Σxy), computed by the database for every row: the
    same double-precision operations in the same order, so the same value, and
    no JSON decoded in Python (the annotators table sorted by agreement read
    and decoded 10,000 lists a render; issue 29)."""

    def at(i: int):
        return Cast(KeyTextTransform(str(i), field), FloatField())

    n, sx, sy, sxx, syy, sxy = (at(i) for i in range(6))
    vx = n * sxx - sx * sx
    vy = n * syy - sy * sy
    defined = Q(
        GreaterThanOrEqual(n, 3),
        IsNull(at(6), True),  # exactly six sums, as pair_corr asks
        GreaterThan(vx, 1e-12),
        GreaterThan(vy, 1e-12),
    )
    return _Correlation(
        When(defined, then=(n * sxy - sx * sy) / Sqrt(vx * vy)),
        default=None,
        output_field=FloatField(),
    )


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
    from annotation.models import StreamItem

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
        from annotation.quality.services.quality import pair_add, pair_corr

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
    """The answers to uncounted stream items (see
    ``annotation.quality.services.uncounted``)."""
    rows = StreamItem.objects.filter(pk__in=item_ids).values_list(
        "pk", "status", "score", "answered_at"
    )
    return {pk: UncountedAnswer(status, score, at) for pk, status, score, at in rows}
