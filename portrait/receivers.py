"""Listeners to ``annotation``'s signals (connected in ``apps.ready``)."""

from django.dispatch import receiver

from annotation.signals import annotator_erased


@receiver(annotator_erased, dispatch_uid="portrait-annotator-erased")
def erase_portrait_feedback(sender, *, annotator_id: int, **kwargs) -> None:
    """An erased person's answers about themselves go with them (inside the
    erasure's transaction)."""
    from .models import PortraitFeedback

    PortraitFeedback.objects.filter(annotator_id=annotator_id).delete()
