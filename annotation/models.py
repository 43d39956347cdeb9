"""Studies, images, annotators and the rating bookkeeping.

The invariants that keep every image at exactly ``target_ratings`` ratings live in
the database (see ``Image.Meta.constraints`` and the unique pairs on ``Assignment``
and ``Rating``); ``annotation.services`` only ever moves the counters with
conditional UPDATEs that those constraints check.
"""

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Now

from core.validation import StringListValidator, validate_json_object

from . import splits

# The demographics questions a study may ask (``Study.demographics_fields``).
DEMOGRAPHIC_FIELDS = ("age_range", "gender", "country", "art_experience")


def _token() -> str:
    return secrets.token_urlsafe(16)


def _public_id() -> str:
    return "a-" + secrets.token_hex(6)


def _shuffle() -> int:
    return secrets.randbelow(2**31)


def _default_scale_labels() -> list[str]:
    return [
        "Strongly dislike",
        "Dislike",
        "Slightly dislike",
        "Neutral",
        "Slightly like",
        "Like",
        "Strongly like",
    ]


RATERS_LOCKED = (
    "raters_per_image cannot change once the study has images: each image keeps "
    "the target it entered with (%(old)s), so the change would never reach them. "
    "Create a new study for a different number of raters."
)


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    instructions = models.TextField(
        blank=True, help_text="Markdown, shown to annotators."
    )
    consent_text = models.TextField(blank=True, help_text="Markdown; must be accepted.")
    # Bounds that make sense (and that Rating.score's -100..100 can hold); the
    # validators reach the admin, the API serializers and study_create alike.
    scale_min = models.SmallIntegerField(
        default=1, validators=[MinValueValidator(-100), MaxValueValidator(100)]
    )
    scale_max = models.SmallIntegerField(
        default=7, validators=[MinValueValidator(-100), MaxValueValidator(100)]
    )
    scale_labels = models.JSONField(
        default=_default_scale_labels,
        blank=True,
        help_text="One label per scale point, lowest first (may be empty).",
        validators=[StringListValidator(max_items=101, max_length=200)],
    )
    raters_per_image = models.PositiveSmallIntegerField(
        default=15, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    quota_per_annotator = models.PositiveIntegerField(
        default=200,
        help_text="Most images one annotator rates in this study.",
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
    )
    lease_seconds = models.PositiveIntegerField(
        default=600,
        help_text="How long an annotator holds an image before it returns "
        "(5 seconds to 1 day).",
        validators=[MinValueValidator(5), MaxValueValidator(86_400)],
    )
    # Which open image a claim deals (services.dealing; issue 27).
    dealing_policy = models.CharField(
        max_length=16,
        choices=[("fullest-first", "Fullest first"), ("adaptive", "Adaptive")],
        default="fullest-first",
        db_default="fullest-first",
        help_text="fullest-first: the fullest open image, random among equals. "
        "adaptive: past the warm-up, the image that teaches the annotator's own "
        "model most, among images near the fullest level (the band).",
    )
    dealing_warmup = models.PositiveSmallIntegerField(
        default=10,
        db_default=10,
        help_text="adaptive: ratings an annotator gives (dealt fullest-first) "
        "before their model chooses (0 to 1000).",
        validators=[MaxValueValidator(1000)],
    )
    dealing_band = models.PositiveSmallIntegerField(
        default=2,
        db_default=2,
        help_text="adaptive: how many open slots above the fullest open image an "
        "image may have and still be chosen (0: only the fullest level; 0 to 1000).",
        validators=[MaxValueValidator(1000)],
    )
    completion_url = models.URLField(blank=True, max_length=500)
    completion_code = models.CharField(max_length=64, blank=True)
    invite_token = models.CharField(max_length=64, default=_token, unique=True)
    demographics_fields = models.JSONField(
        default=list,
        blank=True,
        help_text="Demographics asked on joining, e.g. ['age_range', 'country'].",
        validators=[
            StringListValidator(
                max_items=len(DEMOGRAPHIC_FIELDS),
                max_length=40,
                choices=DEMOGRAPHIC_FIELDS,
            )
        ],
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.DRAFT)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(scale_min__lt=F("scale_max")), name="study_scale_ordered"
            ),
            models.CheckConstraint(
                condition=Q(raters_per_image__gte=1), name="study_raters_positive"
            ),
            models.CheckConstraint(
                condition=Q(quota_per_annotator__gte=1), name="study_quota_positive"
            ),
            models.CheckConstraint(
                condition=Q(lease_seconds__gte=5), name="study_lease_min_5s"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "open", "closed"]),
                name="study_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(dealing_policy__in=["fullest-first", "adaptive"])
                & Q(dealing_warmup__lte=1000)
                & Q(dealing_band__lte=1000),
                name="study_dealing_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # Also refused outside forms (shell, scripts): the images would silently
        # keep their old target.
        fields = kwargs.get("update_fields")
        if fields is None or "raters_per_image" in fields:
            if message := self._raters_change_refused():
                raise ValidationError({"raters_per_image": message})
        super().save(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        if message := self._raters_change_refused():
            raise ValidationError({"raters_per_image": message})

    def _raters_change_refused(self) -> str | None:
        if self.pk is None:
            return None
        old = (
            Study.objects.filter(pk=self.pk)
            .values_list("raters_per_image", flat=True)
            .first()
        )
        if old is None or old == self.raters_per_image:
            return None
        if not self.images.exists():
            return None
        return RATERS_LOCKED % {"old": old}

    @property
    def scale_points(self) -> list[tuple[int, str]]:
        labels = list(self.scale_labels or [])
        return [
            (v, labels[i] if i < len(labels) else "")
            for i, v in enumerate(range(self.scale_min, self.scale_max + 1))
        ]


def image_upload_to(instance: "Image", filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    return f"images/{instance.study_id}/{instance.sha256[:2]}/{instance.sha256}.{ext}"


# Hot tables carry no index that another one already starts with (every rating
# writes to Image twice, and to Assignment and Rating): a foreign key whose column
# leads a composite index or unique constraint has db_index=False (migration 0013).


class Image(models.Model):
    # Indexed by image_unique_sha (study, sha256).
    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="images", db_index=False
    )
    # Dimensions come from image_inspect (already decoded once), not from
    # ImageField's width_field, which would reopen the file on every load.
    file = models.ImageField(upload_to=image_upload_to)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    format = models.CharField(max_length=10, blank=True)
    prompt = models.TextField(blank=True)
    domain = models.CharField(max_length=60, blank=True)  # image_by_domain
    provenance = models.JSONField(
        default=dict, blank=True, validators=[validate_json_object]
    )
    # Copied from the study when the image enters the pool, so the database can
    # check the slot arithmetic on this row alone.
    target_ratings = models.PositiveSmallIntegerField()
    rating_count = models.PositiveSmallIntegerField(default=0)
    lease_count = models.PositiveSmallIntegerField(default=0)
    open_slots = models.GeneratedField(
        expression=F("target_ratings") - F("rating_count") - F("lease_count"),
        output_field=models.IntegerField(),
        db_persist=True,
    )
    # Fixed random key: "random among equals" without ORDER BY random().
    shuffle = models.IntegerField(default=_shuffle)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "sha256"], name="image_unique_sha"
            ),
            models.CheckConstraint(
                condition=Q(rating_count__gte=0) & Q(lease_count__gte=0),
                name="image_counts_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(rating_count__lte=F("target_ratings") - F("lease_count")),
                name="image_never_over_target",
            ),
        ]
        indexes = [
            # The claim's only access path: open images of a study, fullest first,
            # then in shuffle order. Partial, so complete images cost nothing.
            models.Index(
                fields=["study", "open_slots", "shuffle"],
                condition=Q(open_slots__gt=0),
                name="image_open_queue",
            ),
            # Equality only (no LIKE): without db_index's extra pattern index.
            models.Index(fields=["domain"], name="image_by_domain"),
        ]

    def __str__(self) -> str:
        return f"{self.study.slug}:{self.sha256[:10]}"


class Annotator(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        BANNED = "banned", "Banned"
        EXCLUDED = "excluded", "Excluded"

    # PROTECT: an annotator's ratings are records; erasure (the right to be
    # forgotten) pseudonymises through services.annotator_erase instead.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotator"
    )
    public_id = models.CharField(max_length=32, unique=True, default=_public_id)
    external_id = models.CharField(
        max_length=128, blank=True, help_text="e.g. the Prolific PID."
    )
    source = models.CharField(
        max_length=20, default="invite", help_text="invite, prolific, staff, import"
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.ACTIVE)
    status_reason = models.TextField(blank=True)
    demographics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by annotator_erase: excluded, personal data removed, never re-activated.
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"],
                condition=~Q(external_id=""),
                name="annotator_unique_external_id",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "paused", "banned", "excluded"]),
                name="annotator_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def split_key(self) -> str:
        """Who this is as the data names them (``splits.annotator_key``)."""
        return splits.annotator_key(
            source=self.source, external_id=self.external_id, public_id=self.public_id
        )


class Participation(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        # Excluded from this study only (``participation_exclude``): its ratings
        # here are invalid and its claims and ratings here are refused; the
        # annotator's other studies are untouched.
        EXCLUDED = "excluded", "Excluded"

    annotator = models.ForeignKey(  # indexed by participation_unique
        Annotator,
        on_delete=models.CASCADE,
        related_name="participations",
        db_index=False,
    )
    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="participations"
    )
    consented_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    completion_code = models.CharField(max_length=64, blank=True)
    external_study_id = models.CharField(max_length=128, blank=True)
    external_session_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(
        max_length=10, choices=Status, default=Status.ACTIVE, db_default="active"
    )
    excluded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["annotator", "study"], name="participation_unique"
            ),
            # Exactly the excluded participations carry the time of exclusion.
            models.CheckConstraint(
                condition=Q(status="active", excluded_at__isnull=True)
                | Q(status="excluded", excluded_at__isnull=False),
                name="participation_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} in {self.study}"


class Assignment(models.Model):
    class Status(models.TextChoices):
        LEASED = "leased", "Leased"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    # PROTECT throughout: assignments and ratings are records, and deleting one
    # would leave its image's counters above its rows for good.
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="+")
    image = models.ForeignKey(  # indexed by assignment_unique_pair
        Image, on_delete=models.PROTECT, related_name="assignments", db_index=False
    )
    annotator = models.ForeignKey(
        Annotator, on_delete=models.PROTECT, related_name="assignments"
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.LEASED)
    leased_at = models.DateTimeField()
    # When it became the image on screen (a preloaded lease waits its turn);
    # time on item is measured from here.
    shown_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # How it was dealt (services.dealing): adaptive deals record the image's
    # rank in the annotator's ranking and its information (nats) at deal time.
    dealt_by = models.CharField(
        max_length=16, default="fullest-first", db_default="fullest-first"
    )
    dealt_rank = models.PositiveIntegerField(null=True, blank=True)
    dealt_information = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            # One assignment per (image, annotator), ever: an image that an annotator
            # rated, skipped or let expire is never dealt to them again.
            models.UniqueConstraint(
                fields=["image", "annotator"], name="assignment_unique_pair"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["leased", "submitted", "skipped", "expired"]),
                name="assignment_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__gt=F("leased_at")),
                name="assignment_expires_after_lease",
            ),
        ]
        indexes = [
            models.Index(
                fields=["expires_at"],
                condition=Q(status="leased"),
                name="assignment_live_by_expiry",
            ),
            models.Index(
                fields=["annotator", "study", "leased_at"],
                condition=Q(status="leased"),
                name="assignment_live_by_annotator",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.annotator} {self.image_id} {self.status}"


class Rating(models.Model):
    # Indexed by rating_by_study_time, rating_unique_pair, rating_by_annotator.
    study = models.ForeignKey(
        Study, on_delete=models.PROTECT, related_name="ratings", db_index=False
    )
    image = models.ForeignKey(
        Image, on_delete=models.PROTECT, related_name="ratings", db_index=False
    )
    annotator = models.ForeignKey(
        Annotator, on_delete=models.PROTECT, related_name="ratings", db_index=False
    )
    assignment = models.OneToOneField(
        Assignment,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rating",
    )
    score = models.SmallIntegerField(
        validators=[MinValueValidator(-100), MaxValueValidator(100)]
    )
    # Lease to submit, measured by the server (client clocks are not trusted).
    time_on_item_ms = models.PositiveIntegerField(null=True, blank=True)
    # False once the annotator is excluded; such ratings no longer fill a slot.
    is_valid = models.BooleanField(default=True)
    # Evaluation split (annotation.splits), fixed when the rating is written.
    split = models.CharField(max_length=12, choices=splits.CHOICES)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "annotator"], name="rating_unique_pair"
            ),
            models.CheckConstraint(
                condition=Q(score__gte=-100) & Q(score__lte=100),
                name="rating_score_range",
            ),
            models.CheckConstraint(
                condition=Q(split__in=splits.SPLITS), name="rating_split_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["annotator", "study"], name="rating_by_annotator"),
            # The dashboard's ratings per hour and "active now".
            models.Index(fields=["study", "created_at"], name="rating_by_study_time"),
            models.Index(fields=["study", "split"], name="rating_by_split"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} → {self.image_id}: {self.score}"

    def save(self, *args, **kwargs):
        # Every write path gets a split even if it does not name one (bulk_create
        # bypasses this; the CHECK constraint then refuses an empty split).
        if not self.split:
            self.split = splits.split_assign(
                image_key=self.image.sha256, annotator_key=self.annotator.split_key
            )
        super().save(*args, **kwargs)


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


class IntegrityAlert(models.Model):
    """Drift found by the periodic integrity check, shown to staff in the admin
    until someone marks it resolved (after ``manage.py check_integrity --repair``)."""

    source = models.CharField(max_length=40)
    summary = models.TextField()
    details = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.summary}"


# --- quality control and moderation -----------------------------------------------
#
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


class ModerationEvent(models.Model):
    """Who paused, resumed or excluded whom, when and why (the audit log).
    ``user`` is empty for automatic actions."""

    class Action(models.TextChoices):
        PAUSE = "pause", "Paused"
        RESUME = "resume", "Resumed"
        EXCLUDE = "exclude", "Excluded from the study"
        EXCLUDE_ALL = "exclude_all", "Excluded from every study"
        AUTO_PAUSE = "auto_pause", "Paused automatically"

    annotator = models.ForeignKey(
        Annotator, on_delete=models.CASCADE, related_name="moderation_events"
    )
    study = models.ForeignKey(
        Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=12, choices=Action)
    reason = models.TextField(blank=True)
    slots_reopened = models.PositiveIntegerField(default=0)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    action__in=[
                        "pause",
                        "resume",
                        "exclude",
                        "exclude_all",
                        "auto_pause",
                    ]
                ),
                name="moderationevent_action_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.annotator_id} by {self.user_id or 'system'}"


class ErasedIdentifier(models.Model):
    """A keyed digest of an identifier an erased person had (their old public id,
    their external id): the suppression list that keeps an old export or dataset
    from bringing their ratings back, without keeping the identifier itself
    (``annotation.services.erasure.identifier_digest``; HMAC under SECRET_KEY)."""

    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"erased identifier {self.digest[:12]}…"


from .models_dealing import DealingRank, DealingState  # noqa: E402, F401
