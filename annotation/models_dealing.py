"""Adaptive dealing's precomputed rankings (issue 27; ``services.dealing``).

Derived data, rewritten by ``rewardmodel.dealing`` after each training run and
as a newcomer rates; deleted with their study, annotator or image.
"""

from django.db import models
from django.db.models import Q

from .models import Annotator, Image, Study


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
