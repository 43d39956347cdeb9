from django.apps import AppConfig


class SteeringConfig(AppConfig):
    name = "steering"
    verbose_name = "Prompt steering"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects the signal receivers
