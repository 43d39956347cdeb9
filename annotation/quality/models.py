"""Quality control's rows: settings, attention checks, stream items and running
per-annotator statistics."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Now

from annotation.engine.models import Rating
from annotation.studies.models import Annotator, Image, Study

# Everything below stays out of the 15-rating bookkeeping: attention checks are not
# Images, and stream items (checks, repeats, later blind paired tests) are not
# Assignments, so none of them can touch ``rating_count`` or ``lease_count``.


# Quality control's rows are also created by PL/pgSQL (``palate_submit``, migration
# 0010), which inserts only their keys: every default is a database default too
# (``db_default``, the same value; tests/annotation/test_quality_sql.py checks).
_JSON_OBJECT = Value({}, output_field=models.JSONField())
_JSON_ARRAY = Value([], output_field=models.JSONField())


class QualityConfig(models.Model):
    """A study's quality-control settings and flag thresholds (one row per study,
    created with defaults on first use)."""

    study = models.OneToOneField(
        Study, on_delete=models.CASCADE, related_name="quality_config"
    )
    attention_check_rate = models.FloatField(
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        default=0.0,
        db_default=0.0,
        help_text="Chance that an attention check follows a rating (0 = off).",
    )
    repeat_rate = models.FloatField(
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        default=0.0,
        db_default=0.0,
        help_text="Share of an annotator's rated images shown to them again later.",
    )
    repeat_gap = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1)],
        default=10,
        db_default=10,
        help_text="Ratings between an image and its repeat.",
    )
    too_fast_ms = models.PositiveIntegerField(
        default=1000,
        db_default=1000,
        help_text="A rating quicker than this is 'too fast'.",
    )
    too_fast_share = models.FloatField(
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        default=0.25,
        db_default=0.25,
        help_text="Flag when more than this share is too fast.",
    )
    straightline_run = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(2)],
        default=12,
        db_default=12,
        help_text="Flag this many identical scores in a row.",
    )
    check_fail_share = models.FloatField(
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        default=0.25,
        db_default=0.25,
        help_text="Flag when more than this share of checks failed.",
    )
    loo_min_corr = models.FloatField(
        validators=[MinValueValidator(-1.0), MaxValueValidator(1.0)],
        default=0.1,
        db_default=0.1,
        help_text="Flag a correlation with the other raters' mean below this.",
    )
    retest_min_corr = models.FloatField(
        validators=[MinValueValidator(-1.0), MaxValueValidator(1.0)],
        default=0.3,
        db_default=0.3,
        help_text="Flag a test-retest correlation below this.",
    )
    min_evidence = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1)],
        default=20,
        db_default=20,
        help_text="Ratings (or pairs) needed before the rate/correlation flags fire.",
    )
    min_checks = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1)],
        default=3,
        db_default=3,
        help_text="Checks answered before the failed-checks flag fires.",
    )
    auto_pause = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Pause an annotator past a hard threshold.",
    )
    hard_check_failures = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1)],
        default=3,
        db_default=3,
        help_text="Hard threshold: failed attention checks.",
    )
    hard_fast_share = models.FloatField(
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        default=0.6,
        db_default=0.6,
        help_text="Hard threshold: share of too-fast ratings.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(attention_check_rate__gte=0)
                & Q(attention_check_rate__lte=1)
                & Q(repeat_rate__gte=0)
                & Q(repeat_rate__lte=1),
                name="qualityconfig_rates_range",
            ),
            models.CheckConstraint(
                condition=Q(too_fast_share__gte=0)
                & Q(too_fast_share__lte=1)
                & Q(check_fail_share__gte=0)
                & Q(check_fail_share__lte=1)
                & Q(hard_fast_share__gte=0)
                & Q(hard_fast_share__lte=1),
                name="qualityconfig_shares_range",
            ),
            models.CheckConstraint(
                condition=Q(repeat_gap__gte=1) & Q(straightline_run__gte=2),
                name="qualityconfig_counts_min",
            ),
            # Zero would divide by zero on the rating path (no checks answered
            # yet) or pause everyone at once (no failed check needed).
            models.CheckConstraint(
                condition=Q(min_evidence__gte=1)
                & Q(min_checks__gte=1)
                & Q(hard_check_failures__gte=1),
                name="qualityconfig_evidence_min",
            ),
            models.CheckConstraint(
                condition=Q(loo_min_corr__gte=-1)
                & Q(loo_min_corr__lte=1)
                & Q(retest_min_corr__gte=-1)
                & Q(retest_min_corr__lte=1),
                name="qualityconfig_corr_range",
            ),
        ]

    def __str__(self) -> str:
        return f"QC of {self.study}"


def check_upload_to(instance: "AttentionCheck", filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    return f"checks/{instance.study_id}/{instance.sha256}.{ext}"


class AttentionCheck(models.Model):
    """An image with a known right answer (e.g. text in it says "press 2"). Not an
    ``Image``: it has no rating slots and never reaches training or export."""

    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="attention_checks"
    )
    file = models.ImageField(upload_to=check_upload_to)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    instruction = models.CharField(
        max_length=300,
        blank=True,
        help_text=(
            "A note for staff (e.g. the answer the image asks for). Never shown to "
            "annotators: the request must be in the image itself."
        ),
    )
    expected_min = models.SmallIntegerField()
    expected_max = models.SmallIntegerField()
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "sha256"], name="attentioncheck_unique_sha"
            ),
            models.CheckConstraint(
                condition=Q(expected_min__lte=F("expected_max")),
                name="attentioncheck_range_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"check {self.pk} ({self.expected_min}–{self.expected_max})"


class StreamItem(models.Model):
    """An uncounted item dealt into an annotator's stream between counted images:
    an attention check, a repeat of an image they rated before, and (later) other
    kinds such as blind paired tests (``payload`` carries what a kind needs).

    Shown once the annotator's counted ratings reach ``due_after``; answering it
    never creates a Rating, so the 15-rating bookkeeping never sees it.
    """

    class Kind(models.TextChoices):
        ATTENTION = "attention", "Attention check"
        REPEAT = "repeat", "Repeat"
        # Put in by another app for this annotator to judge blind (e.g. steering's
        # paired test); rated like any image, never counted, never in QC stats.
        BLIND = "blind", "Blind item"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ANSWERED = "answered", "Answered"
        SKIPPED = "skipped", "Skipped"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(
        Annotator, on_delete=models.CASCADE, related_name="stream_items"
    )
    kind = models.CharField(max_length=20, choices=Kind)
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    due_after = models.PositiveIntegerField()
    check_item = models.ForeignKey(
        AttentionCheck,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    source_rating = models.ForeignKey(
        Rating, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    payload = models.JSONField(default=dict, blank=True)
    score = models.SmallIntegerField(null=True, blank=True)
    passed = models.BooleanField(null=True, blank=True)
    time_on_item_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    shown_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "answered", "skipped"]),
                name="streamitem_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(kind="attention") | Q(check_item__isnull=False),
                name="streamitem_attention_has_check",
            ),
            models.CheckConstraint(
                condition=~Q(kind="repeat")
                | Q(image__isnull=False, source_rating__isnull=False),
                name="streamitem_repeat_has_source",
            ),
            models.CheckConstraint(
                condition=~Q(kind="blind") | Q(image__isnull=False),
                name="streamitem_blind_has_image",
            ),
            models.CheckConstraint(
                condition=Q(status="pending") | Q(answered_at__isnull=False),
                name="streamitem_finished_has_time",
            ),
            # A rating is repeated at most once.
            models.UniqueConstraint(
                fields=["source_rating"],
                condition=Q(source_rating__isnull=False),
                name="streamitem_one_repeat_per_rating",
            ),
        ]
        indexes = [
            models.Index(
                fields=["annotator", "study", "due_after"],
                condition=Q(status="pending"),
                name="streamitem_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} for {self.annotator_id} ({self.status})"


class AnnotatorQuality(models.Model):
    """Running quality statistics of one annotator in one study, updated by each
    rating and stream answer as it arrives (never by rescanning), and the flags
    they raise. Correlations are kept as sums (n, Σx, Σy, Σx², Σy², Σxy)."""

    annotator = models.ForeignKey(  # indexed by annotatorquality_unique
        Annotator, on_delete=models.CASCADE, related_name="quality", db_index=False
    )
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    n_ratings = models.PositiveIntegerField(default=0, db_default=0)
    n_fast = models.PositiveIntegerField(default=0, db_default=0)
    last_score = models.SmallIntegerField(null=True, blank=True)
    run_length = models.PositiveIntegerField(default=0, db_default=0)
    max_run = models.PositiveIntegerField(default=0, db_default=0)
    score_counts = models.JSONField(default=dict, db_default=_JSON_OBJECT, blank=True)
    time_hist = models.JSONField(default=list, db_default=_JSON_ARRAY, blank=True)
    checks_total = models.PositiveIntegerField(default=0, db_default=0)
    checks_failed = models.PositiveIntegerField(default=0, db_default=0)
    # Own score vs the mean of the image's earlier raters (>= 2 of them).
    loo_sums = models.JSONField(default=list, db_default=_JSON_ARRAY, blank=True)
    # First rating vs repeat.
    retest_sums = models.JSONField(default=list, db_default=_JSON_ARRAY, blank=True)
    retest_abs_diff = models.FloatField(default=0.0, db_default=0.0)
    flags = models.JSONField(default=list, db_default=_JSON_ARRAY, blank=True)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["annotator", "study"], name="annotatorquality_unique"
            ),
        ]
        verbose_name_plural = "annotator quality"

    def __str__(self) -> str:
        return f"quality of {self.annotator_id} in {self.study_id}"
