"""Reads of quality control: QC rows and score distributions for the dashboard,
agreement (alpha) and test-retest, the answers to uncounted items."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import (
    Count,
)

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
    domain, from value counts (image × score): one grouped query, the images'
    domains, and a matrix of images × scale points, whatever the number of
    annotators."""
    import krippendorff
    import numpy as np

    rows = np.array(
        list(
            Rating.objects.filter(study=study, is_valid=True)
            .values_list("image_id", "score")
            .annotate(n=Count("pk"))
            .order_by()
        ),
        dtype=np.int64,
    ).reshape(-1, 3)
    domain_of = dict(Image.objects.filter(study=study).values_list("pk", "domain"))
    values = np.arange(study.scale_min, study.scale_max + 1)

    def alpha(subset: np.ndarray) -> tuple[float | None, int]:
        images, unit = np.unique(subset[:, 0], return_inverse=True)
        if images.size < 2:
            return None, int(images.size)
        counts = np.zeros((images.size, values.size))
        np.add.at(counts, (unit, subset[:, 1] - study.scale_min), subset[:, 2])
        counts = counts[counts.sum(axis=1) >= 2]  # pairable units only
        if counts.shape[0] < 2 or (counts.sum(axis=0) > 0).sum() < 2:
            return None, int(images.size)
        a = krippendorff.alpha(
            value_counts=counts,
            value_domain=values,
            level_of_measurement="interval",
        )
        return float(a), int(images.size)

    overall, n = alpha(rows)
    domains = np.array([domain_of.get(int(i), "") for i in rows[:, 0]], dtype=object)
    by_domain = [
        (d or "(none)", *alpha(rows[domains == d])) for d in sorted(set(domains))
    ]
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
