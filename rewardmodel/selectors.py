"""Reads for the reward model."""

from django.db.models import QuerySet

from .models import AnnotatorMetric, HeldOutPredictions, ModelVersion, TrainingRun


def version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("training_run").order_by("-pk")


def version_active(*, study=None) -> ModelVersion | None:
    """The version active for ``study`` (one per study, a constraint), else the
    one active for every study."""
    active = ModelVersion.objects.filter(is_active=True).select_related("study")
    study_id = getattr(study, "pk", study)
    found = active.filter(study_id=study_id).first() if study_id else None
    return found or active.filter(study__isnull=True).first()


def version_active_list() -> list[ModelVersion]:
    """Every active version (one per study, and maybe one for every study),
    latest promotion first."""
    return list(
        ModelVersion.objects.filter(is_active=True)
        .select_related("study")
        .order_by("-promoted_at", "-pk")
    )


def versions_on_random_weights(*, versions) -> list[ModelVersion]:
    """Of ``versions`` (rows or ids; None is skipped), those whose backbone ran
    on random weights because its pretrained ones could not be loaded (the
    offline fallback): the one test behind every page's warning banner. Rows
    cost nothing; ids one query."""
    rows = [v for v in versions if isinstance(v, ModelVersion)]
    ids = [v for v in versions if v is not None and not isinstance(v, ModelVersion)]
    if ids:
        rows += ModelVersion.objects.filter(pk__in=ids).select_related("study")
    found: dict[int, ModelVersion] = {}
    for v in rows:
        if not v.weights_loaded:
            found.setdefault(v.pk, v)
    return sorted(found.values(), key=lambda v: v.pk)


def annotator_metrics(
    *, version: ModelVersion, split: str | None = None
) -> QuerySet[AnnotatorMetric]:
    qs = AnnotatorMetric.objects.filter(version=version).select_related("annotator")
    if split:
        qs = qs.filter(split=split)
    return qs.order_by("split", "k", "annotator_id")


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("version").order_by("-pk")


def version_previous(*, version: ModelVersion) -> ModelVersion | None:
    """The version trained before ``version`` (for "change since")."""
    return (
        ModelVersion.objects.filter(pk__lt=version.pk, study_id=version.study_id)
        .order_by("-pk")
        .first()
    )


def annotator_metric_map(
    *, version: ModelVersion | None, annotator_ids=None
) -> dict[int, AnnotatorMetric]:
    """Per annotator: their held-out metric row of a version (seen split; for
    annotators held out entirely, the unseen row with the largest k)."""
    if version is None:
        return {}
    qs = AnnotatorMetric.objects.filter(version=version, annotator__isnull=False)
    if annotator_ids is not None:
        qs = qs.filter(annotator_id__in=annotator_ids)
    out: dict[int, AnnotatorMetric] = {}
    # Last one wins: "unseen" rows (largest k last), then the "seen" row.
    for m in qs.order_by("annotator_id", "-split", "k"):
        out[m.annotator_id] = m
    return out


def heldout_predictions(
    *, version: ModelVersion | None, annotator_id: int
) -> HeldOutPredictions | None:
    """The version's predictions on the annotator's held-out images (one row)."""
    if version is None:
        return None
    return HeldOutPredictions.objects.filter(
        version=version, annotator_id=annotator_id
    ).first()


def annotator_metric_history(*, annotator_id: int) -> list[AnnotatorMetric]:
    """One annotator's held-out metrics across versions, oldest first."""
    return list(
        AnnotatorMetric.objects.filter(annotator_id=annotator_id, split="seen")
        .select_related("version")
        .order_by("version_id")
    )


def training_run_comparison(*, run: TrainingRun) -> str:
    """The run's new version against the version active when it ran, in words
    (both on the same held-out ratings; empty when there was none)."""
    from .comparison import comparison_text

    version = getattr(run, "version", None)
    return comparison_text(
        run.comparison or {}, new=f"v{version.pk}" if version else "this run's"
    )


def training_run_get(*, run_id: int) -> TrainingRun | None:
    return TrainingRun.objects.filter(pk=run_id).select_related("study").first()


def nightly_schedule() -> dict | None:
    """The nightly retraining's beat entry: enabled flag and time (UTC)."""
    from django_celery_beat.models import PeriodicTask

    from .services import NIGHTLY_TASK_NAME

    task = (
        PeriodicTask.objects.filter(name=NIGHTLY_TASK_NAME)
        .select_related("crontab")
        .first()
    )
    if task is None or task.crontab is None:
        return None
    hour, minute = task.crontab.hour, task.crontab.minute
    return {
        "enabled": task.enabled,
        # "02:30", as a clock reads (the crontab stores "2" and "30").
        "time": f"{int(hour):02d}:{int(minute):02d}"
        if f"{hour}{minute}".isdigit()
        else f"{hour}:{minute}",
        "hour": task.crontab.hour,
        "minute": task.crontab.minute,
        "timezone": str(task.crontab.timezone),
        "last_run_at": task.last_run_at,
    }
