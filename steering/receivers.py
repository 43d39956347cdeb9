"""Listeners to ``annotation``'s signals (connected in ``apps.ready``)."""

from django.dispatch import receiver

from annotation.signals import annotator_erased


@receiver(annotator_erased, dispatch_uid="steering-annotator-erased")
def erase_steering_runs(sender, *, annotator_id: int, **kwargs) -> None:
    """Runs and blind tests for an erased person were made from their ratings
    alone: they go with the person."""
    from .models import Optimization, PairedTest

    PairedTest.objects.filter(annotator_id=annotator_id).delete()
    Optimization.objects.filter(annotator_id=annotator_id).delete()
