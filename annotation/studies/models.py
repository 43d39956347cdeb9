"""Studies, images, annotators and their participations.

The invariants that keep every image at exactly ``target_ratings`` ratings live in
the database (see ``Image.Meta.constraints`` and the unique pairs on ``Assignment``
and ``Rating`` in ``annotation.engine.models``); the engine only ever moves the
counters with conditional UPDATEs that those constraints check.
"""

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from annotation import splits
from core.validation import StringListValidator, validate_json_object

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
    # Which open image a claim deals (engine.services.dealing; issue 27).
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
    # settings.LANGUAGES; the check below names the same codes.
    language = models.CharField(
        max_length=8,
        choices=settings.LANGUAGES,
        default="en",
        db_default="en",
        help_text="The language participants see the translated pages in (so far "
        "the taste portrait; the other pages are in English).",
    )
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
            models.CheckConstraint(
                condition=Q(language__in=["en", "de"]), name="study_language_valid"
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
