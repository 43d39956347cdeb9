"""Reads for prompt steering."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Candidate, Optimization, OptimizationRound


def optimization_list() -> QuerySet[Optimization]:
    return Optimization.objects.select_related("annotator", "study").order_by("-pk")


def optimization_rounds(opt: Optimization) -> list[OptimizationRound]:
    return list(opt.round_rows.order_by("index"))


def optimization_candidates(opt: Optimization) -> QuerySet[Candidate]:
    return opt.candidates.select_related("optimization", "round", "image").order_by(
        "round__index", "pk"
    )


def optimization_best(opt: Optimization) -> tuple[Candidate | None, Candidate | None]:
    """(base candidate, kept best candidate)."""
    base = opt.candidates.filter(round__index=0).select_related("image").first()
    last = opt.round_rows.order_by("-index").first()
    best = (
        opt.candidates.filter(prompt=last.best_prompt).select_related("image").first()
        if last
        else None
    )
    return base, best
