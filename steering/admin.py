from django.contrib import admin

from .models import Candidate, Optimization, OptimizationRound


class RoundInline(admin.TabularInline):
    model = OptimizationRound
    extra = 0
    can_delete = False
    fields = (
        "index",
        "best_prompt",
        "best_personal",
        "best_spread",
        "best_population",
        "improved",
    )
    readonly_fields = fields


@admin.register(Optimization)
class OptimizationAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "annotator",
        "study",
        "base_prompt",
        "proposer",
        "backend",
        "caution",
        "status",
        "images_used",
        "cost_spent",
        "created_at",
    )
    list_filter = ("status", "proposer", "backend")
    search_fields = ("base_prompt", "annotator__public_id")
    raw_id_fields = ("annotator", "study", "created_by")
    readonly_fields = ("images_used", "cost_spent", "model_version_id", "stopped")
    inlines = [RoundInline]


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "optimization",
        "prompt",
        "personal",
        "spread",
        "population",
        "rejected",
    )
    list_filter = ("optimization__proposer",)
    search_fields = ("prompt",)
    raw_id_fields = ("optimization", "round", "image")
