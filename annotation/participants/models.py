"""Moderation's audit log and erased identifiers' digests."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.studies.models import Annotator, Study


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
    (``annotation.participants.services.erasure.identifier_digest``; HMAC under
    SECRET_KEY)."""

    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"erased identifier {self.digest[:12]}…"
