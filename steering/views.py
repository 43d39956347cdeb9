"""Staff pages for prompt steering: start a run (with its cost estimate), watch
its rounds arrive, compare before and after.

Thin function views over ``steering.services``. Every control is a plain form; with
htmx the estimate follows the form as it changes and the run page's ``progress``
partial polls itself every two seconds until the run has finished (the finished
partial is rendered without its trigger).
"""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.studies.models import Annotator, Study
from core.exceptions import PalateError
from rewardmodel import selectors as rm

from . import blind, costs, selectors, services
from .forms import OptimizationForm
from .models import Optimization

POLL_SECONDS = 2


def _max_images(raw) -> int:
    try:
        return max(1, min(int(raw), services.max_images_limit()))
    except (TypeError, ValueError):
        return OptimizationForm.base_fields["max_images"].initial


def _index_context(form: OptimizationForm, max_images: int, backend: str) -> dict:
    return {
        "form": form,
        "estimates": costs.estimates(max_images=max_images),
        "selected_backend": backend,
        "max_images": max_images,
        "max_limit": services.max_images_limit(),
        "runs": selectors.optimization_list()[:50],
        # A new run is scored by its study's active version (the banner's input).
        "actives": rm.version_active_list(),
    }


@require_GET
@staff_member_required
def index(request: HttpRequest) -> HttpResponse:
    # ?target=<study id>:<annotator id> preselects the person (the dashboard's
    # "Steer toward this person"); a value not among the choices is ignored.
    form = OptimizationForm(initial={"target": request.GET.get("target", "")})
    return render(
        request,
        "steering/index.html",
        _index_context(form, form.fields["max_images"].initial, "procedural"),
    )


@require_GET
@staff_member_required
def estimate(request: HttpRequest) -> HttpResponse:
    """The cost table for the budget and backend on the form (htmx partial)."""
    ctx = {
        "estimates": costs.estimates(
            max_images=_max_images(request.GET.get("max_images"))
        ),
        "selected_backend": request.GET.get("backend", ""),
        "max_images": _max_images(request.GET.get("max_images")),
    }
    return render(request, "steering/index.html#estimate", ctx)


@require_POST
@staff_member_required
def run_create(request: HttpRequest) -> HttpResponse:
    form = OptimizationForm(request.POST)
    if form.is_valid():
        study_id, annotator_id = form.target_ids()
        data = form.cleaned_data
        try:
            opt = services.optimization_create(
                annotator=get_object_or_404(Annotator, pk=annotator_id),
                study=get_object_or_404(Study, pk=study_id),
                base_prompt=data["prompt"],
                proposer=data["proposer"],
                backend=data["backend"],
                rounds=data["rounds"],
                per_round=data["per_round"],
                max_images=data["max_images"],
                caution=data["caution"],
                created_by=request.user,
            )
        except PalateError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Optimisation {opt.pk} queued.")
            return redirect("steering:detail", optimization_id=opt.pk)
    ctx = _index_context(
        form,
        _max_images(request.POST.get("max_images")),
        request.POST.get("backend", ""),
    )
    return render(request, "steering/index.html", ctx, status=400)


def _detail_context(opt: Optimization) -> dict:
    base, best = selectors.optimization_best(opt)
    # Answers arrive in the annotation app; the outcome is stored when seen.
    tests = blind.paired_tests_refresh(optimization=opt)
    waiting = any(t.status == t.Status.PENDING for t in tests)
    return {
        "paired_tests": tests,
        "poll": not opt.is_finished or waiting,
        "can_send": opt.status == opt.Status.DONE
        and base is not None
        and best is not None
        and base.image_id != best.image_id
        and not waiting,
        "opt": opt,
        "rounds": selectors.optimization_rounds(opt),
        "candidates": selectors.optimization_candidates(opt),
        "base": base,
        "best": best,
        "poll_seconds": POLL_SECONDS,
    }


def _get(pk: int) -> Optimization:
    return get_object_or_404(
        Optimization.objects.select_related("annotator", "study"), pk=pk
    )


@require_GET
@staff_member_required
def detail(request: HttpRequest, optimization_id: int) -> HttpResponse:
    opt = _get(optimization_id)
    return render(request, "steering/detail.html", _detail_context(opt))


@require_GET
@staff_member_required
def progress(request: HttpRequest, optimization_id: int) -> HttpResponse:
    """Rounds, gallery and candidates (what the page polls)."""
    opt = _get(optimization_id)
    return render(request, "steering/detail.html#progress", _detail_context(opt))


@require_POST
@staff_member_required
def paired_test(request: HttpRequest, optimization_id: int) -> HttpResponse:
    """Send base and optimised image to the annotator as a blind paired test."""
    opt = _get(optimization_id)
    try:
        blind.paired_test_send(optimization=opt, created_by=request.user)
    except PalateError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"Sent to {opt.annotator.public_id}: the two images come next in their "
            "rating stream, in random order, uncounted.",
        )
    return redirect("steering:detail", optimization_id=opt.pk)
