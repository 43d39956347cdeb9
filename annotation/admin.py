from django.contrib import admin, messages
from django.utils import timezone

from core.exceptions import Conflict

from . import services
from .models import (
    Annotator,
    Assignment,
    Export,
    Image,
    IntegrityAlert,
    Participation,
    Rating,
    Study,
)


class RecordAdmin(admin.ModelAdmin):
    """Ratings and assignments are records: read-only, never added or deleted
    here (a deleted row would leave its image's counters above its rows).
    Erasure goes through the annotator's "Erase" action."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AlertBannerMixin:
    """Open integrity alerts are shown on the pages staff watch."""

    def changelist_view(self, request, extra_context=None):
        open_alerts = IntegrityAlert.objects.filter(resolved_at=None)
        latest = open_alerts.first() if request.method == "GET" else None
        if latest is not None:
            messages.error(
                request,
                f"Integrity check: {open_alerts.count()} open alert(s), latest "
                f"{latest}. Run `manage.py check_integrity --repair`, then mark "
                "the alert resolved under Annotation > Integrity alerts.",
            )
        return super().changelist_view(request, extra_context)


@admin.register(Study)
class StudyAdmin(AlertBannerMixin, admin.ModelAdmin):
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

    def get_readonly_fields(self, request, obj=None):
        # Images keep the target they entered with; see models.RATERS_LOCKED.
        if obj is not None and obj.images.exists():
            return [*self.readonly_fields, "raters_per_image"]
        return self.readonly_fields


@admin.register(Image)
class ImageAdmin(AlertBannerMixin, admin.ModelAdmin):
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


@admin.action(
    description="Exclude selected annotators from every study (invalidates all their "
    "ratings)"
)
def exclude(modeladmin, request, queryset):
    _set_status(request, queryset, Annotator.Status.EXCLUDED)


@admin.action(description="Re-activate selected annotators")
def activate(modeladmin, request, queryset):
    _set_status(request, queryset, Annotator.Status.ACTIVE)


@admin.action(description="Erase selected annotators (right to be forgotten)")
def erase(modeladmin, request, queryset):
    reopened = 0
    ids = list(queryset.order_by("pk").values_list("pk", flat=True))
    for annotator_id in ids:
        reopened += services.annotator_erase(
            annotator_id=annotator_id, reason=f"admin action by {request.user}"
        )
    messages.info(
        request,
        f"{len(ids)} annotator(s) erased (excluded, personal data removed); "
        f"{reopened} slot(s) reopened.",
    )


def _set_status(request, queryset, status):
    # Each annotator in its own transaction, in the engine's lock order.
    reopened, changed, refused = 0, 0, []
    for annotator in queryset.order_by("pk"):
        try:
            reopened += services.annotator_set_status(
                annotator=annotator,
                status=status,
                reason=f"admin action by {request.user}",
            )
            changed += 1
        except Conflict as exc:
            refused.append(str(exc))
    messages.info(
        request, f"{changed} annotator(s) set to {status}; {reopened} slot(s) reopened."
    )
    for reason in refused:
        messages.error(request, reason)


@admin.register(Annotator)
class AnnotatorAdmin(admin.ModelAdmin):
    list_display = ["public_id", "source", "external_id", "status", "created_at"]
    list_filter = ["status", "source"]
    search_fields = ["public_id", "external_id", "user__username"]
    readonly_fields = ["public_id", "created_at", "erased_at"]
    actions = [pause, exclude, activate, erase]

    def has_delete_permission(self, request, obj=None):
        # Their ratings are records; use the "Erase" action instead.
        return False

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
class AssignmentAdmin(RecordAdmin):
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
class RatingAdmin(RecordAdmin):
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


@admin.action(description="Mark selected alerts resolved")
def resolve(modeladmin, request, queryset):
    n = queryset.filter(resolved_at=None).update(resolved_at=timezone.now())
    messages.info(request, f"{n} alert(s) marked resolved.")


@admin.register(IntegrityAlert)
class IntegrityAlertAdmin(AlertBannerMixin, RecordAdmin):
    list_display = ["created_at", "source", "summary", "resolved_at"]
    list_filter = ["resolved_at", "source"]
    actions = [resolve]

    def has_change_permission(self, request, obj=None):
        return obj is None  # the list (and its action), not the edit form
