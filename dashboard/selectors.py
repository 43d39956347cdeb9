"""Reads for the dashboard: composes each app's selectors into page data.

The dashboard sits above the apps (core <- annotation <- generation, rewardmodel
<- dashboard) so that none of them imports another app's models for it. Every
function here runs a fixed number of queries whatever the study's size (asserted
in tests/dashboard/test_queries.py)."""

from django.db.models import Count, Q

from annotation.participants.models import ModerationEvent
from annotation.quality import selectors as quality_selectors
from annotation.quality.services import FLAG_LABELS, pair_corr, time_median_ms
from annotation.studies import selectors as studies_selectors
from annotation.studies.models import Annotator, Study
from generation.models import GenerationItem, GenerationJob
from rewardmodel import selectors as rm
from rewardmodel.models import ModelVersion

from . import stats

PAGE_SIZE = 100  # annotators table rows per page
CHART_POINTS = 2000  # most points the quality-against-ratings chart draws

# How each column sorts, on the light rows of ``study_annotator_keys`` (with the
# metric cells merged in): (AnnotatorQuality fields it needs, key). "ratings"
# sorts by the ratings collected here as the submit counts them (the table shows
# every rating, imported and invalid ones too, as the database's tally keeps them).
SORT_KEYS = {
    "annotator": ((), lambda r: r["public_id"]),
    "ratings": ((), lambda r: r["n_ratings"]),
    "accuracy": ((), lambda r: r["accuracy"]),
    "spearman": ((), lambda r: r["spearman"]),
    "mae": ((), lambda r: r["mae"]),
    "change": ((), lambda r: r["change"]),
    # pair_corr of the running sums, computed by the database (no JSON read).
    "agreement": (("agreement",), lambda r: r["agreement"]),
    "retest": (("retest",), lambda r: r["retest"]),
    "median_ms": (("time_hist",), lambda r: _qc(r, "time_hist", time_median_ms)),
    "flags": (("flags",), lambda r: len(r["flags"] or [])),
    "status": ((), lambda r: r["status"]),
}


def _qc(row: dict, field: str, fn):
    return fn(row[field]) if row["has_quality"] else None


def active_version(*, study: Study | None = None) -> ModelVersion | None:
    """The version that serves ``study`` (its own active version, else the one
    active for every study)."""
    return rm.version_active(study=study)


def active_versions() -> list[ModelVersion]:
    """Every active version (one per study, and maybe one for every study),
    latest promotion first."""
    return rm.version_active_list()


def version_rows(*, actives: list[ModelVersion], limit: int = 50) -> list:
    """The versions table, newest first. Each row knows whether making it active
    would go back in time (``older_than_active``: older than the version active
    for the same study), so a retired version's button says "Roll back to vN"
    only then and "Make vN active" otherwise."""
    active_pk = {v.study_id: v.pk for v in actives}
    rows = list(rm.version_list().select_related("study")[:limit])
    for v in rows:
        v.older_than_active = v.pk < active_pk.get(v.study_id, 0)
    return rows


def _metric_cells(metric, previous) -> dict:
    if metric is None:
        return {
            "metric": None,
            "accuracy": None,
            "accuracy_ci": None,
            "spearman": None,
            "spearman_ci": None,
            "mae": None,
            "mae_ci": None,
            "n_test": 0,
            "change": None,
        }
    change = None
    if previous is not None and None not in (
        metric.pairwise_accuracy,
        previous.pairwise_accuracy,
    ):
        change = metric.pairwise_accuracy - previous.pairwise_accuracy
    return {
        "metric": metric,
        "accuracy": metric.pairwise_accuracy,
        "accuracy_ci": stats.wilson(metric.pairwise_accuracy, metric.n_test),
        "spearman": metric.spearman,
        "spearman_ci": stats.fisher(metric.spearman, metric.n_test),
        "mae": metric.mae,
        "mae_ci": stats.stored_interval(metric.mae_ci_low, metric.mae_ci_high),
        "n_test": metric.n_test,
        "change": change,
    }


def _quality_cells(quality) -> dict:
    if quality is None:
        return {
            "agreement": None,
            "retest": None,
            "median_ms": None,
            "median_s": None,
            "flags": [],
            "checks": (0, 0),
        }
    median = time_median_ms(quality.time_hist)
    return {
        "agreement": pair_corr(quality.loo_sums),
        "retest": pair_corr(quality.retest_sums),
        "median_ms": median,
        "median_s": None if median is None else median / 1000,
        "flags": [(f, FLAG_LABELS.get(f, f)) for f in quality.flags or []],
        "checks": (quality.checks_failed, quality.checks_total),
    }


def _num(v, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ci(ci, digits: int = 2) -> str:
    return "" if ci is None else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _texts(r: dict) -> dict:
    """The table's cells as text, formatted once here: 300 rows of template
    filters cost more than the page's queries."""
    change = r["change"]
    return {
        "accuracy_text": _num(r["accuracy"], 3),
        "accuracy_ci_text": _ci(r["accuracy_ci"]) if r["accuracy"] is not None else "",
        "spearman_text": _num(r["spearman"], 2),
        "spearman_ci_text": _ci(r["spearman_ci"]) if r["spearman"] is not None else "",
        "mae_text": _num(r["mae"], 2),
        "mae_ci_text": _ci(r["mae_ci"]) if r["mae"] is not None else "",
        "change_text": "—" if change is None else f"{change:+.3f}",
        "change_class": "" if not change else ("good" if change > 0 else "bad"),
        "agreement_text": _num(r["agreement"], 2),
        "retest_text": _num(r["retest"], 2),
        "median_text": "—" if r["median_s"] is None else f"{r['median_s']:.1f} s",
    }


def _sorted(rows: list[dict], sort: str, descending: bool) -> list[dict]:
    key = SORT_KEYS.get(sort, SORT_KEYS["annotator"])[1]
    keyed = [(key(r), r) for r in rows]
    present = [kr for kr in keyed if kr[0] is not None]
    missing = [r for k, r in keyed if k is None]  # always last
    present.sort(key=lambda kr: kr[0], reverse=descending)
    return [r for _, r in present] + missing


def _search(rows: list[dict], query: str) -> list[dict]:
    """Rows whose pseudonymous id contains ``query``, or whose external id (the
    Prolific PID for Prolific participants) equals it or starts with it; case
    does not matter. Rows found by external id say so (``matched_external``), so
    the page can show which id matched."""
    q = query.lower()
    found = []
    for r in rows:
        external = r["external_id"]
        by_external = bool(external) and external.lower().startswith(q)
        if by_external or q in r["public_id"].lower():
            found.append({**r, "matched_external": by_external})
    return found


def _light_rows(study: Study, sort: str, flag: str, metrics, before) -> list[dict]:
    fields = set(SORT_KEYS.get(sort, SORT_KEYS["annotator"])[0])
    if flag:
        fields.add("flags")
    rows = studies_selectors.study_annotator_keys(study=study, fields=tuple(fields))
    for r in rows:
        m, p = metrics.get(r["id"]), before.get(r["id"])
        r["accuracy"] = m.pairwise_accuracy if m else None
        r["spearman"] = m.spearman if m else None
        r["mae"] = m.mae if m else None
        r["change"] = None
        if m and p and None not in (m.pairwise_accuracy, p.pairwise_accuracy):
            r["change"] = m.pairwise_accuracy - p.pairwise_accuracy
    return rows


def annotator_table(
    *,
    study: Study,
    sort: str = "accuracy",
    descending: bool = True,
    flag: str = "",
    status: str = "",
    search: str = "",
    page: int = 1,
) -> dict:
    """Every annotator of the study with prediction quality (active version, held
    out) and quality-control statistics; sorted and filtered on light rows (no
    rating read, no model instance: issue 29, 1.4 s of CPU and a count over
    every rating at 10,000 annotators before), then one page of ``PAGE_SIZE``
    rows built in full, with their exact rating counts (all and valid, from the
    database's ``RatingTally``: no rating read either), and formatted."""
    version = active_version(study=study)
    previous = rm.version_previous(version=version) if version else None
    metrics = rm.annotator_metric_map(version=version)
    before = rm.annotator_metric_map(version=previous)
    rows = _light_rows(study, sort, flag, metrics, before)
    total = len(rows)
    if flag:
        rows = [r for r in rows if flag in (r["flags"] or [])]
    if status:
        rows = [r for r in rows if r["status"] == status]
    if search:
        rows = _search(rows, search)
    rows = _sorted(rows, sort, descending)
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(1, page), pages)
    light = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    shown = _full_rows(study, light, metrics, before)
    return {
        "rows": shown,
        "matching": len(rows),
        "page": page,
        "pages": pages,
        "first": (page - 1) * PAGE_SIZE + 1 if shown else 0,
        "last": (page - 1) * PAGE_SIZE + len(shown),
        "chart_points": _chart_points(rows),
        "total": total,
        "version": version,
        "previous": previous,
        "sort": sort if sort in SORT_KEYS else "annotator",
        "descending": descending,
    }


def _full_rows(study: Study, light: list[dict], metrics, before) -> list[dict]:
    """The page's rows in full (the table's cells), in the light rows' order."""
    full = studies_selectors.study_annotator_rows(
        study=study, annotator_ids=[r["id"] for r in light]
    )
    by_id = {lr["id"]: lr for lr in light}
    shown = []
    for r in full:  # in the light rows' order (one that left meanwhile: gone)
        a = r["annotator"]
        lr = by_id[a.pk]
        row = {
            **r,
            **_metric_cells(metrics.get(a.pk), before.get(a.pk)),
            **_quality_cells(r["quality"]),
            "status": lr["status"],
            "matched_external": lr.get("matched_external", False),
        }
        row.update(_texts(row))
        shown.append(row)
    return shown


def _chart_points(rows: list[dict]) -> list[tuple]:
    """(ratings collected here, accuracy, id) of the matching annotators that
    have a held-out accuracy, at most ``CHART_POINTS`` of them (evenly spaced in
    the table's order, so a 10,000-annotator study draws a readable chart in
    bounded time)."""
    points = [
        (r["n_ratings"], r["accuracy"], r["public_id"])
        for r in rows
        if r["accuracy"] is not None
    ]
    step = -(-len(points) // CHART_POINTS) if points else 1
    return points[::step]


def annotator_detail(*, study: Study, annotator: Annotator) -> dict:
    version = active_version(study=study)
    history = rm.annotator_metric_history(annotator_id=annotator.pk)
    quality = annotator.quality.filter(study=study).first()
    metric = rm.annotator_metric_map(version=version, annotator_ids=[annotator.pk]).get(
        annotator.pk
    )
    return {
        "version": version,
        "metric": metric,
        "mae_ci": (
            stats.stored_interval(metric.mae_ci_low, metric.mae_ci_high)
            if metric
            else None
        ),
        "heldout": rm.heldout_predictions(version=version, annotator_id=annotator.pk),
        "history": history,
        "quality": quality,
        **_quality_cells(quality),
        "distribution": quality_selectors.annotator_score_distribution(
            annotator=annotator, study=study
        ),
        "events": list(
            ModerationEvent.objects.filter(annotator=annotator)
            .select_related("user", "study")
            .order_by("-created_at", "-pk")[:50]
        ),
        "n_ratings": annotator.ratings.filter(study=study).count(),
        "n_valid": annotator.ratings.filter(study=study, is_valid=True).count(),
    }


def generation_summary() -> dict:
    """Jobs running and failed, images per backend (three queries)."""
    jobs = GenerationJob.objects.aggregate(
        running=Count("pk", filter=Q(status__in=["queued", "running"])),
        failed=Count("pk", filter=Q(status="failed")),
        total=Count("pk"),
    )
    per_backend = list(
        GenerationItem.objects.filter(status="done")
        .values_list("job__backend")
        .annotate(n=Count("pk"))
        .order_by("-n")
    )
    recent_failed = list(
        GenerationJob.objects.filter(status="failed")
        .select_related("study")
        .order_by("-pk")[:5]
    )
    return {**jobs, "per_backend": per_backend, "recent_failed": recent_failed}


def baseline_table(*, version: ModelVersion) -> list[dict]:
    """The version's held-out metrics next to each baseline, with 95% intervals
    over annotators (computed from the per-annotator rows, one query). Whatever
    baselines the version recorded are shown, so new ones appear by themselves."""
    rows = list(
        version.annotator_metrics.filter(split="seen").values(
            "pairwise_accuracy", "spearman", "mae", "baselines"
        )
    )
    names = ["model"]
    for r in rows:
        for b in r["baselines"] or {}:
            if b not in names:
                names.append(b)
    out = []
    for name in names:

        def get(r, m, name=name):
            if name == "model":
                return r[m]
            return ((r["baselines"] or {}).get(name) or {}).get(m)

        out.append(
            {
                "name": name,
                "accuracy": stats.mean_interval(
                    [get(r, "pairwise_accuracy") for r in rows]
                ),
                "spearman": stats.mean_interval([get(r, "spearman") for r in rows]),
                "mae": stats.mean_interval([get(r, "mae") for r in rows]),
            }
        )
    return out
