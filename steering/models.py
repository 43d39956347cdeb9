"""Prompt optimisations, their rounds and candidates, and blind paired tests.

An ``Optimization`` is one run of the loop for one annotator and one base prompt;
every prompt it tried is a ``Candidate`` (guard-rejected ones included, with the
reason) grouped in ``OptimizationRound`` rows written as each round finishes, so
a page polling the run sees rounds arrive. A ``PairedTest`` is the closing step:
the base and the optimised image shown to that annotator, in random order, as an
uncounted item of their rating stream; the outcome is stored here.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from annotation.studies.models import Annotator, Image, Study

MAX_ROUNDS = 50
MAX_PER_ROUND = 32
MAX_IMAGES_PER_PROMPT = 4
# One posterior sd: rank candidates by a lower confidence bound (see search.py).
DEFAULT_CAUTION = 1.0
MAX_CAUTION = 5.0


class Optimization(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(
        Annotator, on_delete=models.CASCADE, related_name="optimizations"
    )
    base_prompt = models.TextField()
    proposer = models.CharField(max_length=20)
    backend = models.CharField(max_length=40)
    model_name = models.CharField(max_length=200, blank=True)
    rounds = models.PositiveSmallIntegerField()
    per_round = models.PositiveSmallIntegerField()
    images_per_prompt = models.PositiveSmallIntegerField(default=1)
    max_images = models.PositiveIntegerField()
    seed = models.BigIntegerField(default=0)
    # Candidates are ranked by personal − caution × spread (steering.search).
    caution = models.FloatField(default=DEFAULT_CAUTION)
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)
    stopped = models.CharField(
        max_length=500, blank=True, help_text="Why the search ended."
    )
    error = models.TextField(blank=True)
    # The reward model version that scored every candidate (pinned for the run).
    model_version_id = models.BigIntegerField(null=True, blank=True)
    model_version_label = models.CharField(max_length=200, blank=True)
    images_used = models.PositiveIntegerField(default=0)
    cost_estimate = models.FloatField(default=0.0)
    cost_spent = models.FloatField(default=0.0)
    cost_unit = models.CharField(max_length=20, default="USD")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Stamped every few seconds by the worker running it (core.jobs): a stamp
    # that stops moving means the worker died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "done", "failed"]),
                name="optimization_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(rounds__gte=1) & Q(rounds__lte=MAX_ROUNDS),
                name="optimization_rounds_range",
            ),
            models.CheckConstraint(
                condition=Q(caution__gte=0) & Q(caution__lte=MAX_CAUTION),
                name="optimization_caution_range",
            ),
            models.CheckConstraint(
                condition=Q(per_round__gte=1) & Q(per_round__lte=MAX_PER_ROUND),
                name="optimization_per_round_range",
            ),
            models.CheckConstraint(
                condition=Q(images_per_prompt__gte=1)
                & Q(images_per_prompt__lte=MAX_IMAGES_PER_PROMPT),
                name="optimization_images_per_prompt_range",
            ),
            models.CheckConstraint(
                condition=Q(max_images__gte=F("images_per_prompt")),
                name="optimization_budget_fits_base",
            ),
            models.CheckConstraint(
                condition=Q(images_used__lte=F("max_images")),
                name="optimization_within_budget",
            ),
            models.CheckConstraint(
                condition=(
                    Q(status__in=["queued", "running"], finished_at__isnull=True)
                    | Q(status__in=["done", "failed"], finished_at__isnull=False)
                ),
                name="optimization_finished_at_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return f"optimisation {self.pk} for {self.annotator}: {self.base_prompt[:40]}"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)


class OptimizationRound(models.Model):
    optimization = models.ForeignKey(
        Optimization, on_delete=models.CASCADE, related_name="round_rows"
    )
    index = models.PositiveSmallIntegerField()
    # The kept best after this round (never lower than the round before).
    best_prompt = models.TextField()
    best_personal = models.FloatField()
    best_population = models.FloatField()
    best_spread = models.FloatField(default=0.0)
    improved = models.BooleanField(default=False)
    n_images = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["optimization", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["optimization", "index"], name="round_unique_index"
            )
        ]

    def __str__(self) -> str:
        return f"round {self.index} of optimisation {self.optimization_id}"


class Candidate(models.Model):
    optimization = models.ForeignKey(
        Optimization, on_delete=models.CASCADE, related_name="candidates"
    )
    round = models.ForeignKey(
        OptimizationRound, on_delete=models.CASCADE, related_name="candidates"
    )
    prompt = models.TextField()
    note = models.CharField(max_length=500, blank=True)
    rejected = models.CharField(max_length=500, blank=True)
    # The candidate's best image by personal score (None when rejected).
    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    image_ids = models.JSONField(default=list, blank=True)
    personal = models.FloatField(null=True, blank=True)
    population = models.FloatField(null=True, blank=True)
    image_personal = models.JSONField(default=list, blank=True)
    image_population = models.JSONField(default=list, blank=True)
    # Posterior sd of the personal score (mean over the images, as personal).
    spread = models.FloatField(null=True, blank=True)
    image_spread = models.JSONField(default=list, blank=True)
    generation_ms = models.PositiveIntegerField(default=0)
    scoring_ms = models.PositiveIntegerField(default=0)
    cost = models.FloatField(default=0.0)

    class Meta:
        ordering = ["optimization", "round__index", "pk"]
        constraints = [
            # A candidate is either rejected by the guard or scored, never both.
            models.CheckConstraint(
                condition=(
                    Q(rejected="", personal__isnull=False)
                    | (~Q(rejected="") & Q(personal__isnull=True))
                ),
                name="candidate_scored_or_rejected",
            ),
            models.UniqueConstraint(
                fields=["optimization", "prompt"], name="candidate_unique_prompt"
            ),
        ]

    def __str__(self) -> str:
        return self.prompt[:60]

    @property
    def score(self) -> float | None:
        """What the search ranked it by: personal − caution × spread."""
        if self.personal is None:
            return None
        return self.personal - self.optimization.caution * (self.spread or 0.0)


class PairedTest(models.Model):
    """The base and the optimised image sent to the annotator as two uncounted
    items of their rating stream, one right after the other, in random order.
    They rate each on the study's scale like any image, without knowing the two
    belong together; the outcome is which one they rated higher (or a tie)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the annotator"
        ANSWERED = "answered", "Answered"
        SKIPPED = "skipped", "Skipped by the annotator"

    class Outcome(models.TextChoices):
        OPTIMISED = "optimised", "Optimised image rated higher"
        BASE = "base", "Base image rated higher"
        TIE = "tie", "Rated the same"

    optimization = models.ForeignKey(
        Optimization, on_delete=models.CASCADE, related_name="paired_tests"
    )
    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="+")
    base_image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    optimised_image = models.ForeignKey(
        Image, on_delete=models.CASCADE, related_name="+"
    )
    # Drawn at random when sent; the annotator is never told.
    optimised_first = models.BooleanField()
    # The annotation app's uncounted stream items that carry the two images.
    base_item_id = models.BigIntegerField(unique=True)
    optimised_item_id = models.BigIntegerField(unique=True)
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    outcome = models.CharField(max_length=10, choices=Outcome, blank=True)
    base_score = models.SmallIntegerField(null=True, blank=True)
    optimised_score = models.SmallIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(status="pending", outcome="", answered_at__isnull=True)
                    | Q(status="skipped", outcome="", answered_at__isnull=False)
                    | Q(
                        status="answered",
                        outcome__in=["optimised", "base", "tie"],
                        base_score__isnull=False,
                        optimised_score__isnull=False,
                        answered_at__isnull=False,
                    )
                ),
                name="paired_test_outcome_matches_status",
            ),
            models.CheckConstraint(
                condition=~Q(base_image=F("optimised_image")),
                name="paired_test_two_images",
            ),
            # One test waiting per optimisation at a time.
            models.UniqueConstraint(
                fields=["optimization"],
                condition=Q(status="pending"),
                name="paired_test_one_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"paired test {self.pk} ({self.status})"
