"""Reads for the generation app."""

from django.db.models import Count, Q, QuerySet

from annotation.studies.models import Study

from .models import GenerationItem, GenerationJob, Prompt


def study_list_with_generation() -> QuerySet[Study]:
    return Study.objects.annotate(
        n_prompts=Count("prompts", distinct=True),
        n_images=Count("images", distinct=True),
    ).order_by("-created_at")


def prompt_list(*, study: Study) -> QuerySet[Prompt]:
    return (
        Prompt.objects.filter(study=study)
        .annotate(n_jobs=Count("jobs", distinct=True))
        .order_by("pk")
    )


def job_list(*, study: Study | None = None) -> QuerySet[GenerationJob]:
    qs = GenerationJob.objects.select_related("prompt")
    if study is not None:
        qs = qs.filter(study=study)
    return qs.order_by("-pk")


def job_items(*, job: GenerationJob) -> QuerySet[GenerationItem]:
    return job.items.select_related("image").order_by("seed")


def study_generation_totals(*, study: Study) -> dict:
    """Item counts by status over all of a study's jobs."""
    return GenerationItem.objects.filter(job__study=study).aggregate(
        total=Count("pk"),
        done=Count("pk", filter=Q(status="done")),
        failed=Count("pk", filter=Q(status="failed")),
        pending=Count("pk", filter=Q(status__in=["queued", "running"])),
    )


# Backends billed per image by a hosted API.
PAID_BACKENDS = frozenset({"flux", "gemini"})


def job_cancel_effect(*, job: GenerationJob) -> dict[str, int]:
    """What cancelling the job would do: items queued (never made) and running
    (their results, possibly already paid for, are discarded), and those done."""
    counts = dict(job.items.values_list("status").annotate(n=Count("pk")).order_by())
    return {
        name: counts.get(name, 0)
        for name in ("queued", "running", "done", "failed", "cancelled")
    }
