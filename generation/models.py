"""Prompts, generation jobs and their per-seed items.

One ``GenerationItem`` per (job, seed) is the unit of work: the unique pair is what
makes a re-delivered Celery task harmless, and an item links to at most one
``annotation.Image`` (unique), so nothing is produced twice. Job counters are
recomputed from the items under a row lock on the job (see ``services``).
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Length
from django.db.models.lookups import GreaterThan, LessThanOrEqual

from annotation.studies.models import Image, Study

PROMPT_MAX_CHARS = 2000
MAX_SEEDS_PER_JOB = 1000
# Seeds are unsigned 32-bit numbers: what numpy, torch generators and the hosted
# APIs all take.
SEED_MAX = 2**32 - 1


class Prompt(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField()
    domain = models.CharField(max_length=60, blank=True, db_index=True)
    tags = models.JSONField(default=list, blank=True)
    negative_prompt = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "text", "negative_prompt"], name="prompt_unique_text"
            ),
            models.CheckConstraint(
                condition=GreaterThan(Length("text"), 0), name="prompt_text_nonempty"
            ),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("text"), PROMPT_MAX_CHARS),
                name="prompt_text_max_length",
            ),
        ]

    def __str__(self) -> str:
        return self.text[:60]


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


JOB_FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class GenerationJob(models.Model):
    Status = JobStatus

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="jobs")
    # Denormalised from the prompt so study-wide lists need no join.
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    backend = models.CharField(max_length=40)
    model_name = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    n_seeds = models.PositiveIntegerField()
    seed_start = models.BigIntegerField(default=0)
    status = models.CharField(
        max_length=10, choices=JobStatus, default=JobStatus.QUEUED
    )
    error = models.TextField(blank=True)
    n_done = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    n_cancelled = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=JobStatus.values), name="job_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(n_seeds__gte=1) & Q(n_seeds__lte=MAX_SEEDS_PER_JOB),
                name="job_seeds_range",
            ),
            models.CheckConstraint(
                condition=Q(
                    n_seeds__gte=F("n_done") + F("n_failed") + F("n_cancelled")
                ),
                name="job_counts_within_seeds",
            ),
            # A finished job says when; an unfinished one has no finish time.
            models.CheckConstraint(
                condition=(
                    Q(status__in=["queued", "running"], finished_at__isnull=True)
                    | Q(
                        status__in=["done", "failed", "cancelled"],
                        finished_at__isnull=False,
                    )
                ),
                name="job_finished_at_matches_status",
            ),
            models.CheckConstraint(
                condition=~Q(backend=""), name="job_backend_nonempty"
            ),
        ]
        indexes = [models.Index(fields=["study", "-created_at"], name="job_by_study")]

    def __str__(self) -> str:
        return f"job {self.pk} {self.backend}/{self.model_name} ×{self.n_seeds}"

    @property
    def n_finished(self) -> int:
        return self.n_done + self.n_failed + self.n_cancelled

    @property
    def is_finished(self) -> bool:
        return self.status in JOB_FINISHED

    @property
    def progress_percent(self) -> int:
        return int(100 * self.n_finished / self.n_seeds) if self.n_seeds else 100


class ItemStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ITEM_FINISHED = (ItemStatus.DONE, ItemStatus.FAILED, ItemStatus.CANCELLED)


class GenerationItem(models.Model):
    Status = ItemStatus

    job = models.ForeignKey(
        GenerationJob, on_delete=models.CASCADE, related_name="items"
    )
    seed = models.BigIntegerField()
    status = models.CharField(
        max_length=10, choices=ItemStatus, default=ItemStatus.QUEUED
    )
    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True, help_text="The provider's message on failure.")
    # Transient failures so far (each one is retried until the backend's limit).
    attempts = models.PositiveSmallIntegerField(default=0)
    # Who is producing it right now, and until when that claim holds: a second
    # delivery of the same task waits for the claim to end instead of running it
    # twice; a claim left by a dead worker expires and is taken over.
    claim_token = models.CharField(max_length=64, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # The provider task producing it (FLUX: id + polling_url), recorded the moment
    # it is submitted, so an attempt after a poll failure resumes that paid task
    # instead of submitting a second one. Cleared once the task is known gone.
    task_id = models.CharField(max_length=200, blank=True)
    polling_url = models.URLField(max_length=2000, blank=True)
    task_submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["job", "seed"]
        constraints = [
            models.UniqueConstraint(fields=["job", "seed"], name="item_unique_seed"),
            models.UniqueConstraint(
                fields=["image"],
                condition=Q(image__isnull=False),
                name="item_unique_image",
            ),
            models.CheckConstraint(
                condition=Q(status__in=ItemStatus.values), name="item_status_valid"
            ),
            # An image only ever hangs off a finished, successful item.
            models.CheckConstraint(
                condition=Q(image__isnull=True) | Q(status="done"),
                name="item_image_only_when_done",
            ),
        ]
        indexes = [
            models.Index(fields=["job", "status"], name="item_by_job_status"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} seed {self.seed}: {self.status}"
