"""Drift the periodic integrity check found, shown to staff."""

from django.db import models


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
