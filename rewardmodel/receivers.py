"""Listeners to ``annotation``'s signals (connected in ``apps.ready``)."""

from django.dispatch import receiver

from annotation.signals import annotator_erased, dealing_refresh_wanted


@receiver(annotator_erased, dispatch_uid="rewardmodel-annotator-erased")
def erase_model_data(sender, *, annotator_id: int, **kwargs) -> None:
    from .services.erasure import annotator_model_data_erase

    annotator_model_data_erase(annotator_id=annotator_id)


@receiver(dealing_refresh_wanted, dispatch_uid="rewardmodel-dealing-refresh")
def refresh_ranking(sender, *, study_id: int, annotator_id: int, **kwargs) -> None:
    from .dealing import dealing_refresh_soon

    dealing_refresh_soon(study_id=study_id, annotator_id=annotator_id)
