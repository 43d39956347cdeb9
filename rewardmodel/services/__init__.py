"""Writes for the reward model, one module per sub-domain:

* ``runs``: training runs (create, enqueue, execute, stale runs, nightly);
* ``pipeline``: one run's work, from snapshot to stored version;
* ``versions``: promotion (on validation), rollback, version events;
* ``external``: external population scores.

The names below are the app's public write API; import them from here.
"""

from .external import external_scores_import
from .runs import (
    QUEUE_TIMEOUT,
    embeddings_enqueue,
    new_ratings_since_last_run,
    nightly_schedule_set,
    training_nightly,
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
    "embeddings_enqueue",
    "external_scores_import",
    "model_version_promote",
    "model_version_rollback",
    "new_ratings_since_last_run",
    "nightly_schedule_set",
    "training_nightly",
    "training_run_create",
    "training_run_enqueue",
    "training_run_execute",
    "training_runs_fail_stale",
]
