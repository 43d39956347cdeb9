"""The nightly retraining: which versions to refresh, then one run after another.

Prediction prefers a study's own active version and falls back to the version
for every study (``inference.version_for``), so a night refreshes each version
that serves predictions and has something new to learn:

* every study with an **active version of its own** and ratings newer than the
  study's last successful run;
* the **all-studies version** when it serves a study (one with ratings and no
  active version of its own; on a fresh install that is every study) and one of
  the studies it serves has ratings newer than its last successful run.

Only one run may be queued or running (a partial unique index on
``TrainingRun``), so the plan is worked through in order by the task
``rewardmodel.nightly_train``: it creates one run, executes it, and hands the
rest of the plan to its next call.
"""

from __future__ import annotations

from django.db.models import Max
from django.utils import timezone

from annotation.studies.models import Study

from ..models import ModelVersion, TrainingRun
from .runs import training_run_create, training_run_execute, training_runs_fail_stale


def _last_trained(study_id: int | None) -> int | None:
    """The newest rating id the scope's last successful run saw."""
    return TrainingRun.objects.filter(
        status=TrainingRun.Status.SUCCEEDED, study_id=study_id
    ).aggregate(m=Max("last_rating_id"))["m"]


def _newest_rating() -> dict[int, int]:
    """Per study with valid ratings: the newest one's id (one grouped query)."""
    from ..snapshot import ratings_queryset

    rows = (
        ratings_queryset(study_id=None)
        .order_by()
        .values("study_id")
        .annotate(m=Max("pk"))
        .values_list("study_id", "m")
    )
    return dict(rows)


def nightly_plan() -> list[int | None]:
    """The scopes to retrain tonight, in order: study ids (ascending), then
    ``None`` for the all-studies version (see the module docstring)."""
    newest = _newest_rating()
    own = set(
        ModelVersion.objects.filter(
            is_active=True, study_id__in=list(newest)
        ).values_list("study_id", flat=True)
    )
    plan: list[int | None] = []
    for study_id in sorted(own):
        last = _last_trained(study_id)
        if last is None or newest[study_id] > last:
            plan.append(study_id)
    served = [s for s in newest if s not in own]
    if served:
        last = _last_trained(None)
        if last is None or max(newest[s] for s in served) > last:
            plan.append(None)
    return plan


def training_nightly() -> list[int | None]:
    """The beat entry's work: fail stale runs, and return tonight's plan. When
    there is nothing to retrain, a run is recorded as skipped (so the admin sees
    that the night ran)."""
    training_runs_fail_stale()
    plan = nightly_plan()
    if not plan:
        TrainingRun.objects.create(
            trigger=TrainingRun.Trigger.SCHEDULE,
            status=TrainingRun.Status.SKIPPED,
            stage="no new ratings",
            finished_at=timezone.now(),
        )
    return plan


def training_nightly_step(*, study_id: int | None) -> TrainingRun | None:
    """Create and execute one scheduled run for a scope of the plan (None when
    the study is gone). Raises Conflict while another run is queued or running:
    the task waits and tries again."""
    study = None
    if study_id is not None:
        study = Study.objects.filter(pk=study_id).first()
        if study is None:
            return None
    run = training_run_create(study=study, trigger=TrainingRun.Trigger.SCHEDULE)
    return training_run_execute(run_id=run.pk)
