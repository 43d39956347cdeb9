"""The worker path: run one item (``item_run``) under a claim and a concurrency slot.

``item_run`` is what the Celery task and the inline runner (``job_run_inline``,
used by ``seed_demo`` and tests) both call. A backend never touches the database;
everything it produced or failed with is recorded here, under the job's row lock.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from annotation.studies.models import Image
from annotation.studies.services import image_create
from core.exceptions import InvalidInput

from .. import conf
from ..backends import (
    BackendError,
    GenerationRequest,
    PermanentError,
    ProviderTask,
    TransientError,
    backend_get,
)
from ..models import (
    ITEM_FINISHED,
    GenerationItem,
    GenerationJob,
    ItemStatus,
    JobStatus,
)
from .jobs import job_refresh_locked

logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """The item should run again after ``countdown`` seconds (transient error,
    busy concurrency slot, or a live claim by another delivery)."""

    def __init__(self, countdown: float, reason: str):
        super().__init__(reason)
        self.countdown = max(0.0, countdown)
        self.reason = reason


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter; the provider's Retry-After is a floor."""
    base = conf.retry_base_seconds()
    delay = min(conf.retry_max_seconds(), base * (2 ** max(attempt - 1, 0)))
    delay *= random.uniform(0.5, 1.5)
    if retry_after is not None:
        delay = max(delay, retry_after * random.uniform(1.0, 1.2))
    return delay


@contextmanager
def _concurrency_slot(backend: str, limit: int):
    """Hold one of ``limit`` PostgreSQL advisory-lock slots for this backend.

    Session-level locks vanish with the connection, so a killed worker never
    leaks a slot. On SQLite (single machine) the limit is not enforced.
    """
    if limit <= 0 or connection.vendor != "postgresql":
        yield
        return
    key = zlib.crc32(f"palate-generation:{backend}".encode()) & 0x7FFFFFFF
    slots = list(range(limit))
    random.shuffle(slots)
    held = None
    with connection.cursor() as cur:
        for slot in slots:
            cur.execute("SELECT pg_try_advisory_lock(%s, %s)", [key, slot])
            if cur.fetchone()[0]:
                held = slot
                break
    if held is None:
        raise RetryLater(random.uniform(1.0, 3.0), f"all {limit} {backend} slots busy")
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s, %s)", [key, held])


@dataclass
class _Claim:
    items: list[GenerationItem]
    job: GenerationJob
    token: str


def _claim(item_id: int, limits: conf.Limits) -> _Claim | None:
    """Mark the item (plus, for batching backends, more queued items of its job)
    running under a fresh claim. None when there is nothing to do."""
    now = timezone.now()
    with transaction.atomic():
        job_id = (
            GenerationItem.objects.filter(pk=item_id)
            .values_list("job_id", flat=True)
            .first()
        )
        if job_id is None:
            return None
        job = GenerationJob.objects.select_for_update(no_key=True).get(pk=job_id)
        item = GenerationItem.objects.select_for_update(no_key=True).get(pk=item_id)
        if item.status in ITEM_FINISHED or job.status == JobStatus.CANCELLED:
            return None
        if (
            item.status == ItemStatus.RUNNING
            and item.claimed_until is not None
            and item.claimed_until > now
        ):
            # Another delivery is producing it; look again once its claim ends.
            wait = (item.claimed_until - now).total_seconds() + 1
            raise RetryLater(wait, "claimed by another delivery")
        token = uuid.uuid4().hex
        until = now + timedelta(seconds=limits.time_limit + 30)
        items = [item]
        batch = min(
            int(job.params.get("batch_size") or 1), backend_get(job.backend).max_batch
        )
        if batch > 1:
            items += list(
                GenerationItem.objects.select_for_update(skip_locked=True, no_key=True)
                .filter(job=job, status=ItemStatus.QUEUED)
                .exclude(pk=item.pk)
                .order_by("seed")[: batch - 1]
            )
        GenerationItem.objects.filter(pk__in=[i.pk for i in items]).update(
            status=ItemStatus.RUNNING,
            claim_token=token,
            claimed_until=until,
            started_at=now,
        )
        for i in items:
            i.status, i.claim_token, i.claimed_until = ItemStatus.RUNNING, token, until
        job_refresh_locked(job)
    return _Claim(items=items, job=job, token=token)


def _finish(
    claim: _Claim,
    item: GenerationItem,
    *,
    status: str,
    error: str = "",
    image: Image | None = None,
    duration_ms: int | None = None,
    data: bytes | None = None,
    provenance: dict | None = None,
) -> str:
    """Record one item's outcome if our claim still holds. Returns its status."""
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update(no_key=True).get(pk=claim.job.pk)
        current = GenerationItem.objects.select_for_update(no_key=True).get(pk=item.pk)
        if current.status != ItemStatus.RUNNING or current.claim_token != claim.token:
            return current.status  # cancelled, or finished by another delivery
        if data is not None:
            try:
                # Nested atomic: the image row and the item link commit together,
                # so a crash in between leaves neither.
                image = image_create(
                    study=job.study,
                    data=data,
                    filename=f"{job.backend}-job{job.pk}-seed{current.seed}.png",
                    prompt=job.prompt.text,
                    domain=job.prompt.domain,
                    provenance=provenance or {},
                )
            except InvalidInput as exc:
                status, error = ItemStatus.FAILED, exc.message
        current.status = status
        current.error = error[:4000]
        current.image = image if status == ItemStatus.DONE else None
        current.finished_at = timezone.now()
        current.duration_ms = duration_ms
        current.claim_token = ""
        current.claimed_until = None
        current.save(
            update_fields=[
                "status",
                "error",
                "image",
                "finished_at",
                "duration_ms",
                "claim_token",
                "claimed_until",
            ]
        )
        job_refresh_locked(job)
        return status


def _requeue_or_fail(claim: _Claim, exc: TransientError, limits: conf.Limits) -> float:
    """After a transient error: put the items back in the queue, or fail those
    that used up their attempts. Returns the backoff for the retry."""
    countdown = 0.0
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update(no_key=True).get(pk=claim.job.pk)
        rows = list(
            GenerationItem.objects.select_for_update(no_key=True)
            .filter(
                pk__in=[i.pk for i in claim.items],
                claim_token=claim.token,
                status=ItemStatus.RUNNING,
            )
            .order_by("pk")
        )
        for row in rows:
            row.attempts += 1
            row.claim_token, row.claimed_until = "", None
            if row.attempts >= limits.max_attempts:
                row.status = ItemStatus.FAILED
                row.error = (f"Gave up after {row.attempts} attempts: {exc.message}")[
                    :4000
                ]
                row.finished_at = timezone.now()
            else:
                row.status = ItemStatus.QUEUED
                row.error = f"Attempt {row.attempts} failed (will retry): {exc.message}"
                countdown = max(
                    countdown, backoff_seconds(row.attempts, exc.retry_after)
                )
            row.save(
                update_fields=[
                    "attempts",
                    "claim_token",
                    "claimed_until",
                    "status",
                    "error",
                    "finished_at",
                ]
            )
        job_refresh_locked(job)
    return countdown


def _task_store(claim: _Claim, item_pk: int):
    """A callback recording (or, with None, forgetting) the provider task of one
    item, at once and outside any transaction, while our claim holds."""

    def store(task: ProviderTask | None) -> None:
        GenerationItem.objects.filter(
            pk=item_pk, claim_token=claim.token, status=ItemStatus.RUNNING
        ).update(
            task_id=task.id if task else "",
            polling_url=task.polling_url if task else "",
            task_submitted_at=timezone.now() if task else None,
        )

    return store


def _generate(backend, claim: _Claim) -> list:
    """Ask the backend for the claimed items' images (one result per item)."""
    job, prompt = claim.job, claim.job.prompt
    requests = [
        GenerationRequest(
            prompt=prompt.text,
            seed=i.seed,
            model=job.model_name,
            negative_prompt=prompt.negative_prompt,
            params=job.params,
            task=ProviderTask(id=i.task_id, polling_url=i.polling_url)
            if i.polling_url
            else None,
            task_store=_task_store(claim, i.pk),
        )
        for i in claim.items
    ]
    results = backend.generate(requests)
    if len(results) != len(requests):
        raise PermanentError(
            f"The backend returned {len(results)} images for {len(requests)} requests."
        )
    return results


def _fail_all(claim: _Claim, message: str) -> str:
    for item in claim.items:
        _finish(claim, item, status=ItemStatus.FAILED, error=message)
    return ItemStatus.FAILED


def _after_transient(claim: _Claim, exc: TransientError, limits: conf.Limits) -> str:
    countdown = _requeue_or_fail(claim, exc, limits)
    if countdown:
        raise RetryLater(countdown, exc.message) from exc
    return ItemStatus.FAILED


def _after_crash(claim: _Claim, exc: Exception, limits: conf.Limits) -> str:
    """A bug or an unexpected library error. Soft time limits surface here too:
    they are worth another try."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        return _after_transient(
            claim, TransientError("Timed out (soft time limit)."), limits
        )
    return _fail_all(claim, f"Unexpected error: {type(exc).__name__}: {exc}")


def _provenance(backend, claim: _Claim, item, result, elapsed_ms: int) -> dict:
    job, prompt = claim.job, claim.job.prompt
    return {
        "backend": backend.name,
        "model": job.model_name,
        "seed": item.seed,
        "params": job.params,
        "prompt": prompt.text,
        "negative_prompt": prompt.negative_prompt,
        "prompt_id": prompt.pk,
        "domain": prompt.domain,
        "tags": prompt.tags,
        "job_id": job.pk,
        "item_id": item.pk,
        "duration_ms": elapsed_ms,
        "generated_at": timezone.now().isoformat(),
        **result.provenance,
    }


def _record_results(
    backend, claim: _Claim, results: list, elapsed_ms: int, item_id: int
) -> str:
    """Store each image; a result that is a BackendError fails only its item."""
    status = ItemStatus.FAILED
    for item, result in zip(claim.items, results, strict=True):
        if isinstance(result, BackendError):
            s = _finish(claim, item, status=ItemStatus.FAILED, error=result.message)
        else:
            s = _finish(
                claim,
                item,
                status=ItemStatus.DONE,
                data=result.data,
                provenance=_provenance(backend, claim, item, result, elapsed_ms),
                duration_ms=elapsed_ms,
            )
        if item.pk == item_id:
            status = s
    return status


def item_run(*, item_id: int) -> str:
    """Produce the image for one (job, seed). Idempotent: a finished, cancelled or
    missing item is left alone, and an image is stored at most once.

    Returns the item's final status (or "skipped"); raises RetryLater when the
    caller should run it again later.
    """
    job_row = GenerationJob.objects.filter(items__pk=item_id).values("backend").first()
    if job_row is None:
        return "skipped"
    backend = backend_get(job_row["backend"])
    limits = conf.limits_for(backend.name)
    with _concurrency_slot(backend.name, limits.concurrency):
        claim = _claim(item_id, limits)
        if claim is None:
            return "skipped"
        started = time.perf_counter()
        try:
            results = _generate(backend, claim)
        except TransientError as exc:
            return _after_transient(claim, exc, limits)
        except BackendError as exc:
            return _fail_all(claim, exc.message)
        except Exception as exc:
            logger.exception("generation item %s crashed", item_id)
            return _after_crash(claim, exc, limits)
        elapsed_ms = int((time.perf_counter() - started) * 1000 / len(results))
        return _record_results(backend, claim, results, elapsed_ms, item_id)


def job_run_inline(*, job: GenerationJob, max_wait: float = 60.0) -> GenerationJob:
    """Run a job's unfinished items in this process through ``item_run`` (the same
    code the workers run). For the demo, the command line without a worker, and
    tests. Waits out RetryLater up to ``max_wait`` seconds per item."""
    ids = list(
        job.items.filter(status__in=[ItemStatus.QUEUED, ItemStatus.RUNNING])
        .order_by("seed")
        .values_list("pk", flat=True)
    )
    for item_id in ids:
        waited = 0.0
        while True:
            try:
                item_run(item_id=item_id)
                break
            except RetryLater as exc:
                if waited + exc.countdown > max_wait:
                    break
                time.sleep(exc.countdown)
                waited += exc.countdown
    job.refresh_from_db()
    return job
