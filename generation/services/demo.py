"""The demo's images: prompts → jobs → images, run here through the worker's code."""

from __future__ import annotations

from django.db import transaction

from annotation.studies.models import Study

from ..models import GenerationJob
from .jobs import jobs_create
from .prompts import prompt_create
from .worker import job_run_inline


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
    with transaction.atomic(durable=True):
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
