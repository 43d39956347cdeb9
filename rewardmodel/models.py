"""Embedding cache, external aesthetic data, training runs and model versions.

The rules that must hold under concurrency are constraints: one embedding per
(image, backbone), one running training at a time, one active model version per
study.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Length
from django.db.models.lookups import Exact

from annotation.studies.models import Annotator, Image, Study


class Embedding(models.Model):
    """One L2-normalised image embedding for one backbone, stored as float16 bytes.

    Either a study ``image`` or an ``external_item`` (an image that only carries
    imported scores) is embedded, never both.
    """

    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    external_item = models.ForeignKey(
        "ExternalItem",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="embeddings",
    )
    backbone = models.CharField(max_length=200)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField()
    weights_loaded = models.BooleanField(
        help_text="False when the backbone ran with random weights."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "backbone"],
                condition=Q(image__isnull=False),
                name="embedding_unique_image",
            ),
            models.UniqueConstraint(
                fields=["external_item", "backbone"],
                condition=Q(external_item__isnull=False),
                name="embedding_unique_external",
            ),
            models.CheckConstraint(
                condition=Q(image__isnull=False, external_item__isnull=True)
                | Q(image__isnull=True, external_item__isnull=False),
                name="embedding_one_target",
            ),
            models.CheckConstraint(condition=Q(dim__gte=1), name="embedding_dim_pos"),
        ]

    def __str__(self) -> str:
        target = (
            f"image {self.image_id}"
            if self.image_id
            else f"ext {self.external_item_id}"
        )
        return f"{target} @ {self.backbone}"


class ExternalSource(models.Model):
    """A dataset of aesthetic scores from elsewhere (e.g. AVA-style mean scores)."""

    class Kind(models.TextChoices):
        POPULATION = "population", "Population (mean score per image)"
        PER_USER = "per_user", "Per-user ratings"

    name = models.SlugField(max_length=80, unique=True)
    study = models.ForeignKey(
        Study,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="external_sources",
        help_text="Trained with this study's model; empty: with every study's.",
    )
    kind = models.CharField(max_length=12, choices=Kind, default=Kind.POPULATION)
    scale_min = models.FloatField()
    scale_max = models.FloatField()
    description = models.TextField(blank=True)
    weight = models.FloatField(
        default=0.5, help_text="Loss weight of this source relative to our ratings."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(scale_min__lt=models.F("scale_max")),
                name="external_source_scale_ordered",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["population", "per_user"]),
                name="external_source_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(weight__gte=0), name="external_source_weight_nonneg"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ExternalItem(models.Model):
    """One image of an external source: a study image or a file on disk."""

    source = models.ForeignKey(
        ExternalSource, on_delete=models.CASCADE, related_name="items"
    )
    key = models.CharField(max_length=300)
    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    path = models.CharField(max_length=1000, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "key"], name="external_item_unique_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source}:{self.key}"


class ExternalScore(models.Model):
    """A score of an external item: by one rater, or the population mean (rater '')."""

    item = models.ForeignKey(
        ExternalItem, on_delete=models.CASCADE, related_name="scores"
    )
    rater = models.CharField(max_length=128, blank=True)
    score = models.FloatField()
    n_ratings = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item", "rater"], name="external_score_unique_rater"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item}: {self.score} ({self.rater or 'population'})"


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    class Trigger(models.TextChoices):
        API = "api", "API"
        COMMAND = "command", "Command"
        SCHEDULE = "schedule", "Nightly schedule"
        ADMIN = "admin", "Admin"

    class Promote(models.TextChoices):
        AUTO = "auto", "If at least as good as the active version"
        ALWAYS = "always", "Always (forced)"
        NEVER = "never", "Never"

    study = models.ForeignKey(
        Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)
    trigger = models.CharField(max_length=10, choices=Trigger, default=Trigger.API)
    promote = models.CharField(max_length=10, choices=Promote, default=Promote.AUTO)
    config = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=60, blank=True)
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    # The newest rating id the run saw: "no new ratings since" for the nightly skip.
    last_rating_id = models.BigIntegerField(null=True, blank=True)
    # The new version against the active one on the same held-out ratings
    # (services.comparison): what automatic promotion decides on.
    comparison = models.JSONField(
        default=dict,
        blank=True,
        help_text="The new and the active version's pairwise accuracy on the "
        "test-split ratings newer than the active version's training data, and "
        "their paired difference, with 95% intervals over annotators.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The training lock: a partial unique index, so it holds on PostgreSQL
            # and SQLite alike and is released by any status change (even by hand).
            models.UniqueConstraint(
                fields=["status"],
                condition=Q(status="running"),
                name="trainingrun_one_running",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=["queued", "running", "succeeded", "failed", "skipped"]
                ),
                name="trainingrun_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(promote__in=["auto", "always", "never"]),
                name="trainingrun_promote_valid",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1),
                name="trainingrun_progress_range",
            ),
        ]

    def __str__(self) -> str:
        return f"training #{self.pk} ({self.status})"

    @property
    def started_how(self) -> str:
        """How the run was started, as the start of a sentence ("Started from
        the staff pages by ann"): the trigger's label alone reads "Admin by
        admin" next to a user called admin."""
        return {
            self.Trigger.API: "Started through the API",
            self.Trigger.COMMAND: "Started by a management command",
            self.Trigger.SCHEDULE: "Started by the nightly schedule",
            self.Trigger.ADMIN: "Started from the staff pages",
        }.get(self.trigger, f"Started ({self.trigger})")


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate (never active)"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired (was active)"

    training_run = models.OneToOneField(
        TrainingRun,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="version",
    )
    study = models.ForeignKey(
        Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.CANDIDATE)
    is_active = models.BooleanField(default=False)
    backbone = models.CharField(max_length=200)
    weights_loaded = models.BooleanField(
        help_text="False: the backbone had random weights (offline fallback)."
    )
    backbone_warning = models.TextField(blank=True)
    config = models.JSONField(default=dict)
    data_counts = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    primary_metric = models.FloatField(
        null=True,
        blank=True,
        help_text="Mean per-annotator pairwise accuracy on val_seen: the best of "
        "the validation grid, scored on the data that chose it (not an accuracy "
        "estimate; pages show the test figure).",
    )
    checkpoint_path = models.CharField(max_length=500)
    checkpoint_sha256 = models.CharField(max_length=64)
    duration_s = models.FloatField(default=0.0)
    log = models.TextField(blank=True)
    promotion_reason = models.TextField(blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # One active version per study, and one for "every study" (study
            # NULL): two partial unique indexes, since NULLs never collide.
            models.UniqueConstraint(
                fields=["study"],
                condition=Q(is_active=True, study__isnull=False),
                name="modelversion_one_active_per_study",
            ),
            models.UniqueConstraint(
                fields=["is_active"],
                condition=Q(is_active=True, study__isnull=True),
                name="modelversion_one_active_global",
            ),
            models.CheckConstraint(
                condition=Q(is_active=False) | Q(status="active"),
                name="modelversion_active_status",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["candidate", "active", "retired"]),
                name="modelversion_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"v{self.pk}" + (" (active)" if self.is_active else "")

    @property
    def test_accuracy(self) -> dict | None:
        """The held-out figure to show: mean per-annotator pairwise accuracy on
        test_seen (known annotators, new images; the report fit, never trained
        or selected on them) with its 95% interval over annotators."""
        seen = (self.metrics or {}).get("seen") or {}
        model = seen.get("model") or {}
        if model.get("pairwise_accuracy") is None:
            return None
        return {
            "split": "test_seen",
            "mean": model["pairwise_accuracy"],
            "ci95": model.get("pairwise_accuracy_ci95"),
            "n_annotators": seen.get("n_annotators"),
        }


class VersionEvent(models.Model):
    """Promotions, refusals and rollbacks, with their reasons: the version history."""

    class Action(models.TextChoices):
        PROMOTED = "promoted", "Promoted"
        NOT_PROMOTED = "not_promoted", "Not promoted"
        ROLLED_BACK = "rolled_back", "Rolled back to"

    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="events"
    )
    action = models.CharField(max_length=14, choices=Action)
    reason = models.TextField()
    previous = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"v{self.version_id} {self.action}"


class AnnotatorMetric(models.Model):
    """Test metrics of one version for one annotator on one split (and k for k-shot).

    ``baselines`` holds the same four metrics for each baseline on the same split.
    """

    class Split(models.TextChoices):
        SEEN = "seen", "Seen annotators, held-out images"
        UNSEEN = "unseen", "Unseen annotators, k-shot"

    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="annotator_metrics"
    )
    annotator = models.ForeignKey(
        Annotator, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    split = models.CharField(max_length=8, choices=Split)
    k = models.PositiveSmallIntegerField(null=True, blank=True)
    n_test = models.PositiveIntegerField()
    pairwise_accuracy = models.FloatField(null=True)
    spearman = models.FloatField(null=True)
    pearson = models.FloatField(null=True)
    mae = models.FloatField(null=True)
    # 95% percentile-bootstrap interval of the MAE over the annotator's held-out
    # images, computed at training time (the per-image errors are not kept here).
    mae_ci_low = models.FloatField(null=True, blank=True)
    mae_ci_high = models.FloatField(null=True, blank=True)
    baselines = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["version", "annotator", "split", "k"],
                name="annotatormetric_unique",
            ),
            models.CheckConstraint(
                condition=Q(mae_ci_low__isnull=True, mae_ci_high__isnull=True)
                | Q(mae_ci_low__lte=F("mae_ci_high")),
                name="annotatormetric_mae_ci_ordered",
            ),
        ]
        indexes = [models.Index(fields=["version", "split"], name="annmetric_by_split")]

    def __str__(self) -> str:
        return f"v{self.version_id} {self.annotator_id} {self.split} k={self.k}"


# Enough points to see a pattern, few enough that the chart stays small (~40 KiB).
HELDOUT_MAX_POINTS = 400


class HeldOutPredictions(models.Model):
    """One version's predictions for one annotator on the images held out from
    its fit: the predicted-versus-actual chart on the dashboard's annotator page.

    They come from the *report* fit (train split only, hyper-parameters chosen on
    validation), on the same images and split as the annotator's
    ``AnnotatorMetric`` row (test_seen; for an annotator held out entirely, the
    k-shot query images at the largest k). The deployed model is refit on every
    rating, so it could not give them. One row per (version, annotator), arrays as
    little-endian bytes, at most ``MAX_POINTS`` images (a seeded sample beyond):
    a page reads one row, whatever the study's size.
    """

    MAX_POINTS = HELDOUT_MAX_POINTS

    version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="heldout_predictions"
    )
    annotator = models.ForeignKey(
        Annotator, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    split = models.CharField(max_length=8, choices=AnnotatorMetric.Split)
    k = models.PositiveSmallIntegerField(null=True, blank=True)
    n_total = models.PositiveIntegerField(help_text="Held-out images in the split.")
    n = models.PositiveIntegerField(help_text="Images stored (at most MAX_POINTS).")
    image_ids = models.BinaryField(help_text="int64 per image")
    actual = models.BinaryField(help_text="float32: the annotator's score")
    predicted = models.BinaryField(help_text="float32: on the annotator's scale")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["version", "annotator"],
                condition=Q(annotator__isnull=False),
                name="heldout_one_per_annotator",
            ),
            models.CheckConstraint(
                condition=Q(n__gte=1)
                & Q(n__lte=F("n_total"))
                & Q(n__lte=HELDOUT_MAX_POINTS),
                name="heldout_n_bounded",
            ),
            # The three arrays have n entries each.
            models.CheckConstraint(
                condition=Exact(Length("image_ids"), F("n") * 8)
                & Exact(Length("actual"), F("n") * 4)
                & Exact(Length("predicted"), F("n") * 4),
                name="heldout_arrays_match_n",
            ),
        ]

    def __str__(self) -> str:
        return f"v{self.version_id} {self.annotator_id}: {self.n} held-out predictions"

    def points(self) -> list[tuple[int, float, float]]:
        """(image id, actual, predicted) per stored image."""
        import numpy as np

        ids = np.frombuffer(bytes(self.image_ids), dtype="<i8")
        act = np.frombuffer(bytes(self.actual), dtype="<f4")
        pred = np.frombuffer(bytes(self.predicted), dtype="<f4")
        return list(zip(ids.tolist(), act.tolist(), pred.tolist(), strict=True))
