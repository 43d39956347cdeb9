"""Reads for the reward model."""

from django.db.models import QuerySet

from .models import AnnotatorMetric, ModelVersion, TrainingRun


def version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("training_run").order_by("-pk")


def annotator_metrics(
    *, version: ModelVersion, split: str | None = None
) -> QuerySet[AnnotatorMetric]:
    qs = AnnotatorMetric.objects.filter(version=version).select_related("annotator")
    if split:
        qs = qs.filter(split=split)
    return qs.order_by("split", "k", "annotator_id")


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("version").order_by("-pk")
