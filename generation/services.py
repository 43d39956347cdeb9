"""Writes for the generation app: prompts, jobs, and running one item.

Lock order is always GenerationJob → GenerationItem (ascending id), so workers
finishing items of the same job serialise on the job row and never deadlock. Job
counters are recomputed from the items inside that lock, so they are always the
true tally whatever order deliveries arrive in.

``item_run`` is the whole worker path for one (job, seed); the Celery task and the
inline runner (``job_run_inline``, used by ``seed_demo`` and tests) both call it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import time
import uuid
import zlib
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from annotation.models import Image, Study
from annotation.services import image_create
from core.exceptions import Conflict, InvalidInput

from . import conf
from .backends import (
    BackendError,
    ConfigurationError,
    GenerationRequest,
    PermanentError,
    TransientError,
    backend_get,
)
from .models import (
    ITEM_FINISHED,
    MAX_SEEDS_PER_JOB,
    PROMPT_MAX_CHARS,
    GenerationItem,
    GenerationJob,
    ItemStatus,
    JobStatus,
    Prompt,
)

logger = logging.getLogger(__name__)

MAX_TAGS = 20
MAX_IMPORT_ROWS = 5000


# --- prompts ------------------------------------------------------------------


def _clean_prompt_fields(
    *, text: Any, domain: Any = "", tags: Any = None, negative_prompt: Any = ""
) -> dict:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("A prompt cannot be empty.")
    text = " ".join(text.split())
    if len(text) > PROMPT_MAX_CHARS:
        raise InvalidInput(
            f"A prompt has at most {PROMPT_MAX_CHARS} characters (this one has "
            f"{len(text)})."
        )
    domain = (domain or "").strip().lower() if isinstance(domain, str) else ""
    if len(domain) > 60:
        raise InvalidInput("A domain has at most 60 characters.")
    if tags is None or tags == "":
        tags = []
    if isinstance(tags, str):
        tags = [t for t in (p.strip() for p in tags.replace("|", ";").split(";")) if t]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidInput("Tags must be a list of strings.")
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"A prompt has at most {MAX_TAGS} tags.")
    negative_prompt = (negative_prompt or "").strip()
    if len(negative_prompt) > PROMPT_MAX_CHARS:
        raise InvalidInput(
            f"A negative prompt has at most {PROMPT_MAX_CHARS} characters."
        )
    return {
        "text": text,
        "domain": domain,
        "tags": tags,
        "negative_prompt": negative_prompt,
    }


def prompt_create(
    *,
    study: Study,
    text: str,
    domain: str = "",
    tags: list[str] | None = None,
    negative_prompt: str = "",
    created_by=None,
) -> Prompt:
    """Create a prompt, or return the study's existing one with the same text."""
    fields = _clean_prompt_fields(
        text=text, domain=domain, tags=tags, negative_prompt=negative_prompt
    )
    prompt, _ = Prompt.objects.get_or_create(
        study=study,
        text=fields["text"],
        negative_prompt=fields["negative_prompt"],
        defaults={
            "domain": fields["domain"],
            "tags": fields["tags"],
            "created_by": created_by,
        },
    )
    return prompt


def _parse_prompt_rows(*, content: str, fmt: str, domain: str) -> list[dict]:
    """Rows of prompt fields from pasted text, CSV or JSONL; errors name the line."""
    rows: list[dict] = []
    if fmt == "text":
        for line in content.splitlines():
            if line.strip():
                rows.append({"text": line, "domain": domain})
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(content))
        if not reader.fieldnames or "text" not in [
            f.strip() for f in reader.fieldnames
        ]:
            raise InvalidInput(
                "The CSV needs a header row with a 'text' column "
                "(optional: domain, tags, negative_prompt)."
            )
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            rows.append(
                {
                    "text": row.get("text") or "",
                    "domain": row.get("domain") or domain,
                    "tags": row.get("tags") or [],
                    "negative_prompt": row.get("negative_prompt") or "",
                    "_line": reader.line_num,
                }
            )
    elif fmt == "jsonl":
        for n, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"Line {n}: not valid JSON ({exc.msg}).") from None
            if not isinstance(obj, dict):
                raise InvalidInput(f"Line {n}: expected a JSON object.")
            rows.append(
                {
                    "text": obj.get("text", obj.get("prompt", "")),
                    "domain": obj.get("domain") or domain,
                    "tags": obj.get("tags") or [],
                    "negative_prompt": obj.get("negative_prompt") or "",
                    "_line": n,
                }
            )
    else:
        raise InvalidInput(f"Unknown prompt format '{fmt}' (text, csv or jsonl).")
    if len(rows) > MAX_IMPORT_ROWS:
        raise InvalidInput(f"At most {MAX_IMPORT_ROWS} prompts per import.")
    return rows


@dataclass
class PromptImportResult:
    created: list[Prompt]
    existing: list[Prompt]

    @property
    def prompts(self) -> list[Prompt]:
        return self.created + self.existing


def prompts_import(
    *,
    study: Study,
    content: str | bytes,
    fmt: str = "text",
    domain: str = "",
    created_by=None,
) -> PromptImportResult:
    """Add prompts from pasted lines, CSV (header: text, domain, tags) or JSONL.

    All or nothing: one bad row refuses the whole import with its line number.
    Prompts already in the study are reported as existing, not duplicated.
    """
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("The file is not UTF-8 text.") from None
    rows = _parse_prompt_rows(content=content, fmt=fmt, domain=domain)
    if not rows:
        raise InvalidInput("No prompts found.")
    cleaned = []
    for i, row in enumerate(rows, start=1):
        line = row.pop("_line", i)
        try:
            cleaned.append(_clean_prompt_fields(**row))
        except InvalidInput as exc:
            raise InvalidInput(f"Line {line}: {exc.message}") from None
    created, existing = [], []
    with transaction.atomic():
        for fields in cleaned:
            prompt, was_created = Prompt.objects.get_or_create(
                study=study,
                text=fields["text"],
                negative_prompt=fields["negative_prompt"],
                defaults={
                    "domain": fields["domain"],
                    "tags": fields["tags"],
                    "created_by": created_by,
                },
            )
            (created if was_created else existing).append(prompt)
    return PromptImportResult(created=created, existing=existing)


# --- jobs ---------------------------------------------------------------------


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
    prompts = list(prompts)
    if not prompts:
        raise InvalidInput("No prompts to generate from.")
    for prompt in prompts:
        _clean_prompt_fields(text=prompt.text)  # over-long/empty rows from elsewhere
    jobs: list[GenerationJob] = []
    with transaction.atomic():
        locked = (
            Prompt.objects.select_for_update()
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
    from .tasks import task_for_backend

    task = task_for_backend(backend)
    for item_id in item_ids:
        task.delay(item_id)


def _job_refresh(job: GenerationJob) -> GenerationJob:
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
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().get(pk=job.pk)
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
        return _job_refresh(job)


def job_retry(*, job: GenerationJob, enqueue: bool = True) -> list[int]:
    """Queue the failed and cancelled items of a job again. Returns their ids."""
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().get(pk=job.pk)
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
        _job_refresh(job)
        if enqueue:
            transaction.on_commit(
                lambda: items_enqueue(item_ids=ids, backend=job.backend)
            )
    return ids


# --- running one item (the worker path) ---------------------------------------


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
        job = GenerationJob.objects.select_for_update().get(pk=job_id)
        item = GenerationItem.objects.select_for_update().get(pk=item_id)
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
                GenerationItem.objects.select_for_update(skip_locked=True)
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
        _job_refresh(job)
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
        job = GenerationJob.objects.select_for_update().get(pk=claim.job.pk)
        current = GenerationItem.objects.select_for_update().get(pk=item.pk)
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
        _job_refresh(job)
        return status


def _requeue_or_fail(claim: _Claim, exc: TransientError, limits: conf.Limits) -> float:
    """After a transient error: put the items back in the queue, or fail those
    that used up their attempts. Returns the backoff for the retry."""
    countdown = 0.0
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().get(pk=claim.job.pk)
        rows = list(
            GenerationItem.objects.select_for_update()
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
        _job_refresh(job)
    return countdown


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
        job = claim.job
        prompt = job.prompt
        requests = [
            GenerationRequest(
                prompt=prompt.text,
                seed=i.seed,
                model=job.model_name,
                negative_prompt=prompt.negative_prompt,
                params=job.params,
            )
            for i in claim.items
        ]
        started = time.perf_counter()
        try:
            results = backend.generate(requests)
            if len(results) != len(requests):
                raise PermanentError(
                    f"The backend returned {len(results)} images for "
                    f"{len(requests)} requests."
                )
        except TransientError as exc:
            countdown = _requeue_or_fail(claim, exc, limits)
            if countdown:
                raise RetryLater(countdown, exc.message) from exc
            return ItemStatus.FAILED
        except BackendError as exc:
            for item in claim.items:
                _finish(claim, item, status=ItemStatus.FAILED, error=exc.message)
            return ItemStatus.FAILED
        except Exception as exc:  # a bug or an unexpected library error
            logger.exception("generation item %s crashed", item_id)
            # Soft time limits surface here too: they are worth another try.
            from celery.exceptions import SoftTimeLimitExceeded

            if isinstance(exc, SoftTimeLimitExceeded):
                countdown = _requeue_or_fail(
                    claim, TransientError("Timed out (soft time limit)."), limits
                )
                if countdown:
                    raise RetryLater(countdown, "soft time limit") from exc
                return ItemStatus.FAILED
            for item in claim.items:
                _finish(
                    claim,
                    item,
                    status=ItemStatus.FAILED,
                    error=f"Unexpected error: {type(exc).__name__}: {exc}",
                )
            return ItemStatus.FAILED
        elapsed_ms = int((time.perf_counter() - started) * 1000 / len(requests))
        status = ItemStatus.FAILED
        for item, result in zip(claim.items, results, strict=True):
            provenance = {
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
            s = _finish(
                claim,
                item,
                status=ItemStatus.DONE,
                data=result.data,
                provenance=provenance,
                duration_ms=elapsed_ms,
            )
            if item.pk == item_id:
                status = s
        return status


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


def demo_images_generate(
    *,
    study: Study,
    prompts: list[dict],
    per_prompt: int = 2,
    backend: str = "procedural",
    inline: bool = True,
    created_by=None,
) -> list[GenerationJob]:
    """Prompts (dicts with text, domain, tags) → jobs → images with open slots.

    With ``inline`` the items run here, right away, through the worker's code path
    (``item_run``); otherwise they are queued for Celery workers.
    """
    with transaction.atomic():
        created = [
            prompt_create(study=study, created_by=created_by, **p) for p in prompts
        ]
        jobs = jobs_create(
            prompts=created,
            backend=backend,
            n_seeds=per_prompt,
            created_by=created_by,
            enqueue=not inline,
        )
    if inline:
        jobs = [job_run_inline(job=job) for job in jobs]
    return jobs
