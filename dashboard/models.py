"""The dashboard's kept figures (issue 29): study-wide numbers that need a pass
over a study's ratings or assignments, computed off the request by a Celery task
(``dashboard.tasks``) into one row per study that every web process reads."""

from django.db import models

from annotation.studies.models import Study


class StudyFigures(models.Model):
    """Krippendorff's alpha and the assignments by how they were dealt, as
    ``annotation``'s selectors compute them, with when. ``value`` is empty
    until the first computation has finished (the page says "being computed").

    ``computed_at`` is when the figures' computation began (they describe the
    study at about that time); ``checked_at`` is the latest time the study was
    found unchanged since (``fingerprint``), so the figures were still current
    then: the page shows them "as of" ``checked_at``. ``requested_at`` throttles
    the pages' requests for a refresh (one queued task per interval)."""

    study = models.OneToOneField(
        Study, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    value = models.JSONField(null=True, blank=True)
    fingerprint = models.JSONField(null=True, blank=True)
    computed_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "study figures"

    def __str__(self) -> str:
        return f"study {self.study_id}: figures as of {self.checked_at}"
