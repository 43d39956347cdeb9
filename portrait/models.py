"""The taste portrait's two tables: a study's portrait settings, and the
participants' "this is me / this is not me" answers on predicted images.

The answers are uncounted: they live here, never in ``Rating`` or
``StreamItem``, so training, quality control, progress and the export's ratings
never see them."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from annotation.studies.models import Annotator, Image, Study

MIN_RATINGS_DEFAULT = 20


class PortraitSettings(models.Model):
    """Per study; a study without a row has the portrait off."""

    study = models.OneToOneField(
        Study, on_delete=models.CASCADE, related_name="portrait_settings"
    )
    enabled = models.BooleanField(
        default=False,
        help_text="Participants can see the portrait of their taste.",
    )
    before_completion_redirect = models.BooleanField(
        default=False,
        help_text=(
            "Participants sent back to a recruiting platform at the end (the study "
            "has a completion URL, or they came from Prolific) see the portrait "
            "before that redirect. Off: they never see it."
        ),
    )
    min_ratings = models.PositiveIntegerField(
        default=MIN_RATINGS_DEFAULT,
        validators=[MinValueValidator(5), MaxValueValidator(10_000)],
        help_text="Ratings a participant needs before the portrait can be seen.",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name_plural = "portrait settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(min_ratings__gte=5) & Q(min_ratings__lte=10_000),
                name="portrait_min_ratings_range",
            )
        ]

    def __str__(self) -> str:
        return f"portrait of {self.study}: {'on' if self.enabled else 'off'}"


class PortraitFeedback(models.Model):
    """One participant's answer on one image the portrait predicted for them.
    Clicking again replaces the answer (one row per participant and image)."""

    class Answer(models.TextChoices):
        ME = "me", "this is me"
        NOT_ME = "not_me", "this is not me"

    class Side(models.TextChoices):
        LIKE = "like", "predicted to be liked"
        DISLIKE = "dislike", "predicted to be disliked"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(
        Annotator, on_delete=models.CASCADE, related_name="portrait_feedback"
    )
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    answer = models.CharField(max_length=8, choices=Answer)
    side = models.CharField(max_length=8, choices=Side)
    # What the model said when the answer was given (the lab compares them).
    predicted = models.FloatField(null=True, blank=True)
    spread = models.FloatField(null=True, blank=True)
    version_id = models.BigIntegerField(null=True, blank=True)
    n_ratings = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["annotator", "image"], name="portrait_feedback_unique"
            ),
            models.CheckConstraint(
                condition=Q(answer__in=["me", "not_me"]),
                name="portrait_feedback_answer_valid",
            ),
            models.CheckConstraint(
                condition=Q(side__in=["like", "dislike"]),
                name="portrait_feedback_side_valid",
            ),
        ]
        indexes = [models.Index(fields=["study", "annotator"])]

    def __str__(self) -> str:
        return f"{self.annotator_id} on image {self.image_id}: {self.answer}"


# An answer's own fields, after its two keys (annotator, image), in the order both
# readers (`export_portrait_feedback`'s CSV, the dataset export's config) write them.
ANSWER_FIELDS = (
    "answer",
    "side",
    "predicted",
    "spread",
    "version_id",
    "n_ratings",
    "created_at",
    "updated_at",
)
