"""Reads for the reward model."""

from django.db.models import QuerySet

from .models import AnnotatorMetric, ModelVersion, TrainingRun


def version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("training_run").order_by("-pk")


def version_active(*, study=None) -> ModelVersion | None:
    """The version active for ``study`` (one per study, a constraint), else the
    one active for every study."""
    active = ModelVersion.objects.filter(is_active=True)
    study_id = getattr(study, "pk", study)
    found = active.filter(study_id=study_id).first() if study_id else None
    return found or active.filter(study__isnull=True).first()


def annotator_metrics(
    *, version: ModelVersion, split: str | None = None
) -> QuerySet[AnnotatorMetric]:
    qs = AnnotatorMetric.objects.filter(version=version).select_related("annotator")
    if split:
        qs = qs.filter(split=split)
    return qs.order_by("split", "k", "annotator_id")


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("version").order_by("-pk")
