"""Writes for the reward model, one module per sub-domain:

* ``runs``: training runs (create, enqueue, execute, stale runs, schedule);
* ``nightly``: which versions a night retrains, one run after another;
* ``pipeline``: one run's work, from snapshot to stored version;
* ``versions``: promotion (on validation), rollback, version events;
* ``external``: external population scores.

The names below are the app's public write API; import them from here.
"""

from .external import external_scores_import
from .nightly import nightly_plan, training_nightly, training_nightly_step
from .runs import (
    QUEUE_TIMEOUT,
    STALE_AFTER,
    embeddings_enqueue,
    nightly_schedule_set,
    training_run_create,
    training_run_enqueue,
    training_run_execute,
    training_runs_fail_stale,
)
from .versions import model_version_promote, model_version_rollback

NIGHTLY_TASK_NAME = "rewardmodel: nightly retraining"  # created by migration 0002

__all__ = [
    "NIGHTLY_TASK_NAME",
    "QUEUE_TIMEOUT",
    "STALE_AFTER",
    "embeddings_enqueue",
    "external_scores_import",
    "model_version_promote",
    "model_version_rollback",
    "nightly_plan",
    "nightly_schedule_set",
    "training_nightly",
    "training_nightly_step",
    "training_run_create",
    "training_run_enqueue",
    "training_run_execute",
    "training_runs_fail_stale",
]
