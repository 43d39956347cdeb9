"""Assignments (leases) and ratings: the engine's rows."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from annotation import splits
from annotation.studies.models import Annotator, Image, Study


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
    # How it was dealt (engine.services.dealing): adaptive deals record the
    # image's rank in the annotator's ranking and its information (nats) then.
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


# Adaptive dealing's precomputed rankings (issue 27; services.dealing): derived
# data, rewritten by rewardmodel.dealing after each training run and as
# the annotator rates; deleted with their study, annotator or image.


class DealingRank(models.Model):
    """One image in one annotator's ranking in a study: ``rank`` 1 is dealt
    first; ``information`` (nats) what rating it is expected to teach their
    model, given the ratings of the ranks before it."""

    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    annotator = models.ForeignKey(
        Annotator, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveIntegerField()
    information = models.FloatField()

    class Meta:
        constraints = [
            # The claim's access path: the annotator's ranking in rank order.
            models.UniqueConstraint(
                fields=["annotator", "study", "rank"], name="dealingrank_walk"
            ),
            models.UniqueConstraint(
                fields=["annotator", "study", "image"], name="dealingrank_unique_image"
            ),
            models.CheckConstraint(
                condition=Q(rank__gte=1) & Q(information__gte=0),
                name="dealingrank_values",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator_id} in {self.study_id}: #{self.rank} {self.image_id}"


class DealingState(models.Model):
    """When an annotator's ranking was last computed, from which model version,
    and how uncertain their model still is (the dashboard shows it)."""

    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="+")
    # A rewardmodel version's id (annotation imports no app above it: no FK).
    version_id = models.IntegerField(null=True, blank=True)
    how = models.CharField(max_length=40, blank=True)
    # Mean posterior sd of their own part of the score over the images open to
    # them, in standard deviations of their own ratings (comparable between
    # people); None when nothing was open or no model served.
    uncertainty = models.FloatField(null=True, blank=True)
    ranked = models.PositiveIntegerField(default=0)
    refreshed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "annotator"], name="dealingstate_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator_id} in {self.study_id} ({self.ranked} ranked)"


# Counts the claim reads instead of counting rows (issue 29): kept by the
# database itself, by triggers on annotation_image and annotation_rating
# (migration 0025, on PostgreSQL and SQLite alike), so every writer (the
# engine, imports, bulk SQL) keeps them exact in its own transaction. Never
# written from Python.


class StudyTally(models.Model):
    """How many images a study has (what the rating page's progress calls the
    pool): one row per study with images."""

    study = models.OneToOneField(
        Study, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    images = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.study_id}: {self.images} images"


class RatingTally(models.Model):
    """How many ratings an annotator has in a study: ``rated`` valid or not
    (what the claim's quota and the page's progress count), ``valid`` those
    still valid (what the dashboard's annotators page shows; migration 0027)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(
        Annotator, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    rated = models.IntegerField(default=0)
    valid = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["annotator", "study"], name="ratingtally_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator_id} in {self.study_id}: {self.rated} rated"
