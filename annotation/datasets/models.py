"""The researcher export's job rows."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.studies.models import Study


class Export(models.Model):
    """One dataset export of a study: its options, live progress and the result.

    Written by a Celery worker (``annotation.tasks.export_dataset``), never inside
    a web request; the finished archive lives under ``PALATE_EXPORT_DIR``, outside
    the public media folder.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class Format(models.TextChoices):
        PARQUET = "parquet", "Parquet (Hugging Face datasets layout)"
        JSONL = "jsonl", "JSON Lines"
        CSV = "csv", "CSV"

    class Images(models.TextChoices):
        EMBED = "embed", "Embedded in the Parquet files"
        PATH = "path", "Image files beside the tables"
        NONE = "none", "No images"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="exports")
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)
    format = models.CharField(max_length=10, choices=Format, default=Format.PARQUET)
    images = models.CharField(max_length=10, choices=Images, default=Images.EMBED)
    include_excluded = models.BooleanField(
        default=False, help_text="Keep excluded annotators and their ratings."
    )
    include_invalid = models.BooleanField(
        default=False, help_text="Keep ratings marked invalid."
    )
    stage = models.CharField(max_length=40, blank=True)
    progress = models.FloatField(default=0.0)
    # Relative to PALATE_EXPORT_DIR; set once the archive is complete.
    path = models.CharField(max_length=300, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when the archive was deleted because a person in it was erased; the
    # download then answers 410 with ``withdrawn_reason``.
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed"]),
                name="export_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(format__in=["parquet", "jsonl", "csv"]),
                name="export_format_valid",
            ),
            models.CheckConstraint(
                condition=Q(images__in=["embed", "path", "none"]),
                name="export_images_valid",
            ),
            # Embedded images exist only in Parquet; text formats carry paths.
            models.CheckConstraint(
                condition=~Q(images="embed") | Q(format="parquet"),
                name="export_embed_needs_parquet",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1),
                name="export_progress_fraction",
            ),
            models.CheckConstraint(
                condition=~Q(status="succeeded") | ~Q(path=""),
                name="export_succeeded_has_file",
            ),
        ]

    def __str__(self) -> str:
        return f"export #{self.pk} of {self.study_id} ({self.format}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)
