from django.apps import AppConfig


class PortraitConfig(AppConfig):
    name = "portrait"
    verbose_name = "Taste portrait"

    def ready(self) -> None:
        from annotation.hooks import export_table_register, page_extras_register

        from . import receivers  # noqa: F401 - connects the signal receivers
        from .export import TABLE
        from .hooks import participant_links

        page_extras_register(participant_links)
        export_table_register(TABLE)
