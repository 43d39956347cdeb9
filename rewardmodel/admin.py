from django import forms
from django.contrib import admin, messages

from core.exceptions import PalateError

from . import services
from .models import (
    AnnotatorMetric,
    Embedding,
    ExternalItem,
    ExternalSource,
    ModelVersion,
    TrainingRun,
    VersionEvent,
)


class TrainingRunAddForm(forms.ModelForm):
    """ "Add training run" starts one (through the same service as the API), so
    the first run can be started from the admin on a fresh install."""

    class Meta:
        model = TrainingRun
        fields = ["study", "promote", "config"]

    def clean(self):
        data = super().clean()
        services.training_runs_fail_stale()
        busy = TrainingRun.objects.filter(
            status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
        ).first()
        if busy is not None:
            raise forms.ValidationError(
                f"Training run #{busy.pk} is already {busy.status}; wait for it "
                "(a run that no worker picks up is failed after "
                f"{services.QUEUE_TIMEOUT})."
            )
        return data


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "status",
        "stage",
        "progress",
        "trigger",
        "promote",
        "study",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "trigger"]
    readonly_fields = [
        "status",
        "progress",
        "stage",
        "error",
        "log",
        "last_rating_id",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "created_by",
    ]
    actions = ["start_training"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = TrainingRunAddForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [*self.readonly_fields, "study", "promote", "config", "trigger"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["study", "promote", "config"]
        return super().get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return  # runs are records: nothing to edit by hand
        try:
            run = services.training_run_enqueue(
                study=obj.study,
                promote=obj.promote,
                config=obj.config or {},
                trigger=TrainingRun.Trigger.ADMIN,
                user=request.user,
            )
        except PalateError as exc:  # lost a race with another start
            self.message_user(request, exc.message, messages.ERROR)
            run = TrainingRun.objects.filter(
                status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
            ).first()
        obj.pk, obj._state.adding = run.pk, False
        self.message_user(request, f"Training run #{run.pk} queued for a worker.")

    @admin.action(description="Start a new training run (like the nightly one)")
    def start_training(self, request, queryset):
        try:
            run = services.training_run_enqueue(
                trigger=TrainingRun.Trigger.ADMIN, user=request.user
            )
        except PalateError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"Training run #{run.pk} queued.")


class VersionEventInline(admin.TabularInline):
    model = VersionEvent
    fk_name = "version"
    extra = 0
    can_delete = False
    readonly_fields = ["action", "reason", "previous", "user", "created_at"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "is_active",
        "status",
        "test_figure",
        "backbone",
        "weights_loaded",
        "created_at",
        "promotion_reason",
    ]
    list_filter = ["status", "backbone", "weights_loaded"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    inlines = [VersionEventInline]
    actions = ["promote", "force_promote", "rollback"]

    @admin.display(description="pairwise accuracy, test split [95%]")
    def test_figure(self, version) -> str:
        t = version.test_accuracy
        if t is None:
            return "—"
        ci = t["ci95"]
        return f"{t['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    def _one(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return None
        return queryset.get()

    @admin.action(
        description="Promote if at least as good as the active version "
        "(on the same held-out ratings)"
    )
    def promote(self, request, queryset):
        version = self._one(request, queryset)
        if version is None:
            return
        done = services.model_version_promote(
            version=version, user=request.user, reason="admin action"
        )
        version.refresh_from_db()
        self.message_user(
            request,
            version.promotion_reason,
            messages.SUCCESS if done else messages.WARNING,
        )

    @admin.action(description="Force-promote (ignore the metric)")
    def force_promote(self, request, queryset):
        version = self._one(request, queryset)
        if version is None:
            return
        services.model_version_promote(
            version=version, force=True, user=request.user, reason="admin action"
        )
        self.message_user(request, f"v{version.pk} is now active.")

    @admin.action(description="Roll back to this version")
    def rollback(self, request, queryset):
        version = self._one(request, queryset)
        if version is None:
            return
        try:
            services.model_version_rollback(
                version=version, user=request.user, reason="admin action"
            )
        except PalateError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"Rolled back: v{version.pk} is active.")


@admin.register(AnnotatorMetric)
class AnnotatorMetricAdmin(admin.ModelAdmin):
    list_display = [
        "version",
        "annotator",
        "split",
        "k",
        "n_test",
        "pairwise_accuracy",
        "spearman",
        "mae",
    ]
    list_filter = ["split", "k", "version"]
    readonly_fields = [f.name for f in AnnotatorMetric._meta.fields]


@admin.register(Embedding)
class EmbeddingAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "image",
        "external_item",
        "backbone",
        "dim",
        "weights_loaded",
        "created_at",
    ]
    list_filter = ["backbone", "weights_loaded"]
    readonly_fields = [f.name for f in Embedding._meta.fields]


@admin.register(ExternalSource)
class ExternalSourceAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "study",
        "scale_min",
        "scale_max",
        "weight",
        "created_at",
    ]


@admin.register(ExternalItem)
class ExternalItemAdmin(admin.ModelAdmin):
    list_display = ["id", "source", "key", "image", "path"]
    list_filter = ["source"]
    search_fields = ["key", "path"]
