"""Listeners to ``annotation``'s signals (connected in ``apps.ready``)."""

from django.dispatch import receiver

from annotation.signals import annotator_erased


@receiver(annotator_erased, dispatch_uid="rewardmodel-annotator-erased")
def erase_model_data(sender, *, annotator_id: int, **kwargs) -> None:
    from .services.erasure import annotator_model_data_erase

    annotator_model_data_erase(annotator_id=annotator_id)
