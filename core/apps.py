from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Project-wide pieces every app may import: the error hierarchy, the API
    error handler and small shared helpers. ``core`` imports no other app."""

    name = "core"
    default_auto_field = "django.db.models.BigAutoField"
