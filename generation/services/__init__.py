"""Writes for the generation app, one module per sub-domain:

* ``prompts``: cleaning, creating and importing prompts;
* ``jobs``: validating, creating, enqueueing, cancelling and retrying jobs;
* ``worker``: running one item (``item_run``), the path every image takes;
* ``demo``: the demo's prompts → jobs → images, run inline.

The names below are the app's public write API; import them from here.
"""

from .demo import demo_images_generate
from .jobs import (
    items_enqueue,
    job_cancel,
    job_create,
    job_retry,
    job_validate,
    jobs_create,
)
from .prompts import (
    PromptImportResult,
    prompt_create,
    prompt_fields_clean,
    prompts_import,
)
from .worker import RetryLater, backoff_seconds, item_run, job_run_inline

__all__ = [
    "PromptImportResult",
    "RetryLater",
    "backoff_seconds",
    "demo_images_generate",
    "item_run",
    "items_enqueue",
    "job_cancel",
    "job_create",
    "job_retry",
    "job_run_inline",
    "job_validate",
    "jobs_create",
    "prompt_create",
    "prompt_fields_clean",
    "prompts_import",
]
