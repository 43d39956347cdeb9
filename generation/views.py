"""Staff pages for generation: prompts, jobs, live progress, gallery.

Thin function views over ``generation.services``. Every control is a plain form
or link; with htmx the job page's ``progress`` partial polls itself every two
seconds and stops (the partial is rendered without its trigger) once the job has
finished.
"""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation.models import Study
from core.confirm import Confirmation, ask, is_confirmed
from core.exceptions import PalateError

from . import selectors, services
from .backends import BACKENDS
from .forms import JobCreateForm, PromptImportForm
from .models import GenerationJob

POLL_SECONDS = 2


def _study_context(study: Study, **extra) -> dict:
    prompts = list(selectors.prompt_list(study=study))
    return {
        "study": study,
        "prompts": prompts,
        "jobs": selectors.job_list(study=study)[:100],
        "totals": selectors.study_generation_totals(study=study),
        "import_form": extra.pop("import_form", None) or PromptImportForm(),
        "job_form": extra.pop("job_form", None)
        or JobCreateForm(prompt_choices=[(p.pk, p.text) for p in prompts]),
        "backends": sorted(BACKENDS),
        **extra,
    }


@require_GET
@staff_member_required
def study_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "generation/study_list.html",
        {"studies": selectors.study_list_with_generation()},
    )


@require_GET
@staff_member_required
def study_detail(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    return render(request, "generation/study_detail.html", _study_context(study))


@require_POST
@staff_member_required
def prompts_add(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    form = PromptImportForm(request.POST, request.FILES)
    if form.is_valid():
        content, fmt = form.content_and_format()
        try:
            result = services.prompts_import(
                study=study,
                content=content,
                fmt=fmt,
                domain=form.cleaned_data["domain"],
                created_by=request.user,
            )
        except PalateError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                f"Added {len(result.created)} prompts"
                + (
                    f" ({len(result.existing)} were already there)."
                    if result.existing
                    else "."
                ),
            )
            return redirect("generation:study", study_id=study.pk)
    return render(
        request,
        "generation/study_detail.html",
        _study_context(study, import_form=form),
        status=400,
    )


@require_POST
@staff_member_required
def jobs_add(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    prompts = list(selectors.prompt_list(study=study))
    form = JobCreateForm(request.POST, prompt_choices=[(p.pk, p.text) for p in prompts])
    if form.is_valid():
        data = form.cleaned_data
        chosen = prompts
        if data["prompts"]:
            ids = {int(i) for i in data["prompts"]}
            chosen = [p for p in prompts if p.pk in ids]
        if data["domain"].strip():
            chosen = [p for p in chosen if p.domain == data["domain"].strip().lower()]
        try:
            jobs = services.jobs_create(
                prompts=chosen,
                backend=data["backend"],
                model=data["model"],
                n_seeds=data["n_seeds"],
                params=data["params"],
                created_by=request.user,
            )
        except PalateError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                f"Queued {len(jobs)} jobs, {sum(j.n_seeds for j in jobs)} images.",
            )
            if len(jobs) == 1:
                return redirect("generation:job", job_id=jobs[0].pk)
            return redirect("generation:study", study_id=study.pk)
    return render(
        request,
        "generation/study_detail.html",
        _study_context(study, job_form=form),
        status=400,
    )


def _job_context(job: GenerationJob) -> dict:
    return {
        "job": job,
        "items": selectors.job_items(job=job),
        "poll_seconds": POLL_SECONDS,
    }


@require_GET
@staff_member_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(
        GenerationJob.objects.select_related("prompt", "study"), pk=job_id
    )
    return render(request, "generation/job_detail.html", _job_context(job))


@require_GET
@staff_member_required
def job_progress(request: HttpRequest, job_id: int) -> HttpResponse:
    """The progress and gallery fragment (what the page polls)."""
    job = get_object_or_404(
        GenerationJob.objects.select_related("prompt", "study"), pk=job_id
    )
    return render(request, "generation/job_detail.html#progress", _job_context(job))


def _job_action(request: HttpRequest, job_id: int, action) -> HttpResponse:
    job = get_object_or_404(GenerationJob, pk=job_id)
    try:
        message = action(job)
    except PalateError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, message)
    if request.htmx:
        job.refresh_from_db()
        return render(request, "generation/job_detail.html#progress", _job_context(job))
    return redirect("generation:job", job_id=job.pk)


def _cancel_confirmation(job: GenerationJob) -> Confirmation:
    n = selectors.job_cancel_effect(job=job)
    return Confirmation(
        title=f"Cancel job {job.pk} ({job.backend}, a paid backend)?",
        lines=[
            f"{n['queued']} queued images are not made.",
            f"{n['running']} images being made right now are discarded when they "
            f"arrive ({job.backend} may bill them anyway).",
            f"{n['done']} images already made stay in the study.",
            "“Retry failed and cancelled” can queue the cancelled ones again "
            "(billed again).",
        ],
        confirm_label=f"Cancel job {job.pk}",
        cancel_url=reverse("generation:job", args=[job.pk]),
        final="",
        base_template="generation/_base.html",
    )


@require_POST
@staff_member_required
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    """Cancelling a job on a paid backend asks first (plain form, no htmx)."""
    job = get_object_or_404(GenerationJob, pk=job_id)
    paid = job.backend in selectors.PAID_BACKENDS and not job.is_finished
    if paid and not is_confirmed(request):
        return ask(request, _cancel_confirmation(job))

    def cancel(job):
        job = services.job_cancel(job=job)
        return f"Job {job.pk} cancelled ({job.n_cancelled} images not made)."

    return _job_action(request, job_id, cancel)


@require_POST
@staff_member_required
def job_retry(request: HttpRequest, job_id: int) -> HttpResponse:
    def retry(job):
        ids = services.job_retry(job=job)
        return f"Queued {len(ids)} images again."

    return _job_action(request, job_id, retry)
