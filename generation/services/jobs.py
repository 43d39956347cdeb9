"""Generation jobs: validate, create (one item per seed), enqueue, cancel, retry.

Lock order is always GenerationJob → GenerationItem (ascending id), so workers
finishing items of the same job serialise on the job row and never deadlock. Job
counters are recomputed from the items inside that lock (``job_refresh_locked``),
so they are always the true tally whatever order deliveries arrive in.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from core.exceptions import Conflict, InvalidInput
from core.validation import json_problem

from ..backends import ConfigurationError, backend_get
from ..models import (
    MAX_SEEDS_PER_JOB,
    SEED_MAX,
    GenerationItem,
    GenerationJob,
    ItemStatus,
    JobStatus,
    Prompt,
)
from .prompts import prompt_fields_clean


def job_validate(
    *, backend: str, model: str | None, n_seeds: int, params: dict | None
) -> tuple[str, str, dict]:
    """Check a job request before anything is written. Returns (backend, model,
    params) with the model defaulted. Raises InvalidInput with a clear message."""
    try:
        impl = backend_get(backend)
    except ConfigurationError as exc:
        raise InvalidInput(str(exc)) from None
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int):
        raise InvalidInput("The number of seeds must be a whole number.")
    if not 1 <= n_seeds <= MAX_SEEDS_PER_JOB:
        raise InvalidInput(
            f"The number of seeds must be between 1 and {MAX_SEEDS_PER_JOB}."
        )
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("Parameters must be a JSON object.")
    params = dict(params or {})
    problem = json_problem(params)
    if problem:
        raise InvalidInput(f"The parameters cannot be stored: the object {problem}.")
    model = (model or "").strip() or impl.default_model
    try:
        impl.validate(model=model, params=params)
    except ConfigurationError as exc:
        raise InvalidInput(str(exc)) from None
    return backend, model, params


def _next_seed(prompt: Prompt, backend: str, model: str) -> int:
    last = GenerationItem.objects.filter(
        job__prompt=prompt, job__backend=backend, job__model_name=model
    ).aggregate(m=Max("seed"))["m"]
    return 0 if last is None else last + 1


def _jobs_check(
    prompts: Iterable[Prompt], *, n_seeds: int, seed_start: int | None
) -> list[Prompt]:
    """The prompts as a list, once the seed range and every prompt are valid."""
    if seed_start is not None and not 0 <= seed_start <= SEED_MAX - n_seeds + 1:
        raise InvalidInput(
            f"seed_start must be between 0 and {SEED_MAX - n_seeds + 1} "
            f"(seeds are 32-bit, {n_seeds} from there)."
        )
    prompts = list(prompts)
    if not prompts:
        raise InvalidInput("No prompts to generate from.")
    for prompt in prompts:
        prompt_fields_clean(text=prompt.text)  # over-long/empty rows from elsewhere
    return prompts


def jobs_create(
    *,
    prompts: Iterable[Prompt],
    backend: str,
    model: str | None = None,
    n_seeds: int = 1,
    params: dict | None = None,
    seed_start: int | None = None,
    created_by=None,
    enqueue: bool = True,
) -> list[GenerationJob]:
    """One job per prompt with ``n_seeds`` items each, queued after commit.

    Seeds continue where earlier jobs of the same prompt/backend/model stopped
    (unless ``seed_start`` is given), so asking again yields new images rather
    than duplicates. Validation happens first: on bad input nothing is written.
    """
    backend, model, params = job_validate(
        backend=backend, model=model, n_seeds=n_seeds, params=params
    )
    prompts = _jobs_check(prompts, n_seeds=n_seeds, seed_start=seed_start)
    jobs: list[GenerationJob] = []
    # nested: the job API and the demo create a prompt and its jobs in one transaction
    with transaction.atomic(durable=False):
        locked = (
            Prompt.objects.select_for_update(no_key=True)
            .filter(pk__in=[p.pk for p in prompts])
            .order_by("pk")
        )
        by_pk = {p.pk: p for p in locked}
        for prompt in prompts:
            prompt = by_pk[prompt.pk]
            start = (
                seed_start
                if seed_start is not None
                else _next_seed(prompt, backend, model)
            )
            job = GenerationJob.objects.create(
                prompt=prompt,
                study_id=prompt.study_id,
                backend=backend,
                model_name=model,
                params=params,
                n_seeds=n_seeds,
                seed_start=start,
                created_by=created_by,
            )
            GenerationItem.objects.bulk_create(
                GenerationItem(job=job, seed=start + i) for i in range(n_seeds)
            )
            jobs.append(job)
        if enqueue:
            ids = list(
                GenerationItem.objects.filter(job__in=jobs)
                .order_by("job_id", "seed")
                .values_list("pk", flat=True)
            )
            transaction.on_commit(lambda: items_enqueue(item_ids=ids, backend=backend))
    return jobs


def job_create(*, prompt: Prompt, **kwargs) -> GenerationJob:
    return jobs_create(prompts=[prompt], **kwargs)[0]


def items_enqueue(*, item_ids: list[int], backend: str) -> None:
    """Send one Celery task per item (call after commit)."""
    from ..tasks import task_for_backend

    task = task_for_backend(backend)
    for item_id in item_ids:
        task.delay(item_id)


def job_refresh_locked(job: GenerationJob) -> GenerationJob:
    """Recount a *locked* job from its items and move its status accordingly."""
    counts = dict(job.items.values_list("status").annotate(n=Count("pk")).order_by())
    job.n_done = counts.get(ItemStatus.DONE, 0)
    job.n_failed = counts.get(ItemStatus.FAILED, 0)
    job.n_cancelled = counts.get(ItemStatus.CANCELLED, 0)
    unfinished = counts.get(ItemStatus.QUEUED, 0) + counts.get(ItemStatus.RUNNING, 0)
    now = timezone.now()
    if job.status != JobStatus.CANCELLED:
        if unfinished == 0:
            job.status = JobStatus.FAILED if job.n_done == 0 else JobStatus.DONE
            job.finished_at = job.finished_at or now
            job.error = _failure_summary(job) if job.n_failed else ""
        elif counts.get(ItemStatus.RUNNING, 0) or job.n_done + job.n_failed:
            job.status = JobStatus.RUNNING
            job.started_at = job.started_at or now
            job.finished_at = None
        else:
            job.status = JobStatus.QUEUED
            job.finished_at = None
    job.save(
        update_fields=[
            "n_done",
            "n_failed",
            "n_cancelled",
            "status",
            "started_at",
            "finished_at",
            "error",
        ]
    )
    return job


def _failure_summary(job: GenerationJob) -> str:
    first = (
        job.items.filter(status=ItemStatus.FAILED)
        .exclude(error="")
        .order_by("seed")
        .values_list("error", flat=True)
        .first()
    )
    summary = f"{job.n_failed} of {job.n_seeds} images failed"
    return f"{summary}; first error: {first}" if first else summary


def job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Stop a job: items not finished yet are cancelled (a worker that is already
    generating one discards its result)."""
    with transaction.atomic(durable=True):
        job = GenerationJob.objects.select_for_update(no_key=True).get(pk=job.pk)
        if job.is_finished:
            raise Conflict(f"Job {job.pk} is already {job.status}.")
        now = timezone.now()
        job.items.filter(status__in=[ItemStatus.QUEUED, ItemStatus.RUNNING]).update(
            status=ItemStatus.CANCELLED,
            finished_at=now,
            claim_token="",
            claimed_until=None,
        )
        job.status = JobStatus.CANCELLED
        job.finished_at = now
        return job_refresh_locked(job)


def items_redeliver_abandoned(*, now=None) -> int:
    """Send the task again for items still "running" under an expired claim: their
    worker died with the message unacknowledged, and the broker would hold it
    until its visibility timeout (hours). The new delivery takes the item over
    under a fresh claim (``worker._claim``), so a second copy changes nothing.
    The beat task ``generation.redeliver_abandoned`` calls this; returns how
    many items were sent."""
    from ..tasks import task_for_backend

    now = now or timezone.now()
    rows = list(
        GenerationItem.objects.filter(
            status=ItemStatus.RUNNING, claimed_until__lt=now
        ).values_list("pk", "job__backend")[:1000]
    )
    for item_id, backend in rows:
        # Expires with the sweep period: if no worker takes it, the next sweep
        # sends it again instead of copies piling up.
        task_for_backend(backend).apply_async(args=[item_id], expires=_sweep_seconds())
    return len(rows)


def _sweep_seconds() -> float:
    from django.conf import settings

    return settings.PALATE_JOB_SWEEP_S


def job_retry(*, job: GenerationJob, enqueue: bool = True) -> list[int]:
    """Queue the failed and cancelled items of a job again. Returns their ids."""
    with transaction.atomic(durable=True):
        job = GenerationJob.objects.select_for_update(no_key=True).get(pk=job.pk)
        ids = list(
            job.items.filter(status__in=[ItemStatus.FAILED, ItemStatus.CANCELLED])
            .order_by("seed")
            .values_list("pk", flat=True)
        )
        if not ids:
            raise Conflict(f"Job {job.pk} has no failed or cancelled images to retry.")
        try:
            backend_get(job.backend).validate(model=job.model_name, params=job.params)
        except ConfigurationError as exc:
            raise InvalidInput(str(exc)) from None
        GenerationItem.objects.filter(pk__in=ids).update(
            status=ItemStatus.QUEUED,
            error="",
            attempts=0,
            finished_at=None,
            started_at=None,
            claim_token="",
            claimed_until=None,
            duration_ms=None,
        )
        job.status = JobStatus.QUEUED
        job.finished_at = None
        job.error = ""
        job_refresh_locked(job)
        if enqueue:
            transaction.on_commit(
                lambda: items_enqueue(item_ids=ids, backend=job.backend)
            )
    return ids
