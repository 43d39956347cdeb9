from django.contrib import admin

from .models import PortraitFeedback, PortraitSettings


@admin.register(PortraitSettings)
class PortraitSettingsAdmin(admin.ModelAdmin):
    list_display = ["study", "enabled", "before_completion_redirect", "min_ratings"]


@admin.register(PortraitFeedback)
class PortraitFeedbackAdmin(admin.ModelAdmin):
    """Read only: the participants' own answers."""

    list_display = ["study", "annotator", "image", "answer", "side", "updated_at"]
    list_filter = ["answer", "side"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
