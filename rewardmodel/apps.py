from django.apps import AppConfig


class RewardModelConfig(AppConfig):
    name = "rewardmodel"
    verbose_name = "Reward model"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects the signal receivers
