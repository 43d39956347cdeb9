from django.contrib import admin, messages

from . import services
from .models import (
    Annotator,
    Assignment,
    Export,
    Image,
    Participation,
    Rating,
    Study,
)


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "status",
        "raters_per_image",
        "quota_per_annotator",
        "lease_seconds",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["invite_token", "created_at"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "study",
        "domain",
        "rating_count",
        "lease_count",
        "open_slots",
        "target_ratings",
        "width",
        "height",
        "created_at",
    ]
    list_filter = ["study", "domain", "format"]
    search_fields = ["sha256", "prompt"]
    # Counters are owned by the assignment engine: never edited by hand.
    readonly_fields = [
        "sha256",
        "width",
        "height",
        "format",
        "target_ratings",
        "rating_count",
        "lease_count",
        "open_slots",
        "shuffle",
        "created_at",
    ]
    list_select_related = ["study"]


@admin.action(description="Pause selected annotators")
def pause(modeladmin, request, queryset):
    _set_status(request, queryset, Annotator.Status.PAUSED)


@admin.action(description="Exclude selected annotators (invalidates their ratings)")
def exclude(modeladmin, request, queryset):
    _set_status(request, queryset, Annotator.Status.EXCLUDED)


@admin.action(description="Re-activate selected annotators")
def activate(modeladmin, request, queryset):
    _set_status(request, queryset, Annotator.Status.ACTIVE)


def _set_status(request, queryset, status):
    reopened = 0
    for annotator in queryset:
        reopened += services.annotator_set_status(
            annotator=annotator, status=status, reason=f"admin action by {request.user}"
        )
    messages.info(
        request,
        f"{queryset.count()} annotator(s) set to {status}; "
        f"{reopened} slot(s) reopened.",
    )


@admin.register(Annotator)
class AnnotatorAdmin(admin.ModelAdmin):
    list_display = ["public_id", "source", "external_id", "status", "created_at"]
    list_filter = ["status", "source"]
    search_fields = ["public_id", "external_id", "user__username"]
    readonly_fields = ["public_id", "created_at"]
    actions = [pause, exclude, activate]

    def get_readonly_fields(self, request, obj=None):
        # Status goes through the actions, which release leases and slots.
        return [*self.readonly_fields, "status"] if obj else self.readonly_fields


@admin.register(Participation)
class ParticipationAdmin(admin.ModelAdmin):
    list_display = [
        "annotator",
        "study",
        "consented_at",
        "started_at",
        "completed_at",
        "completion_code",
    ]
    list_filter = ["study"]
    search_fields = [
        "annotator__public_id",
        "annotator__external_id",
        "completion_code",
    ]
    list_select_related = ["annotator", "study"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "study",
        "image",
        "annotator",
        "status",
        "leased_at",
        "expires_at",
    ]
    list_filter = ["status", "study"]
    search_fields = ["annotator__public_id"]
    list_select_related = ["study", "annotator"]
    readonly_fields = [f.name for f in Assignment._meta.fields]


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "study",
        "image",
        "annotator",
        "score",
        "time_on_item_ms",
        "is_valid",
        "created_at",
    ]
    list_filter = ["study", "is_valid", "score"]
    search_fields = ["annotator__public_id"]
    list_select_related = ["study", "annotator"]
    readonly_fields = [f.name for f in Rating._meta.fields]


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    """Read-only: exports are made by the API, the staff page or the command."""

    list_display = [
        "id",
        "study",
        "format",
        "images",
        "status",
        "progress",
        "created_at",
    ]
    list_filter = ["status", "format"]
    readonly_fields = [f.name for f in Export._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
