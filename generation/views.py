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

from annotation.studies.models import Study
from core.confirm import Confirmation, ask, is_confirmed
from core.exceptions import InvalidInput, PalateError

from . import confirm, costs, selectors, services
from .backends import BACKENDS
from .forms import JobCreateForm, PromptImportForm
from .models import GenerationJob

POLL_SECONDS = 2


def _added_key(study: Study) -> str:
    return f"generation:added:{study.pk}"


def _study_context(study: Study, request: HttpRequest | None = None, **extra) -> dict:
    """The study page. The job form ticks the prompts just added (kept in the
    session until jobs are queued); the estimate shows what pressing Queue makes
    and costs for the form's initial state (static/generation.js follows it)."""
    prompts = list(selectors.prompt_list(study=study))
    added = set(request.session.get(_added_key(study), [])) if request else set()
    job_form = extra.pop("job_form", None) or JobCreateForm(
        prompt_choices=[(p.pk, p.text) for p in prompts],
        initial={"prompts": [str(p.pk) for p in prompts if p.pk in added]},
    )
    ticked = {str(v) for v in (job_form["prompts"].value() or [])}
    n_prompts = sum(str(p.pk) in ticked for p in prompts) or len(prompts)
    backend = job_form["backend"].value() or job_form.fields["backend"].choices[0][0]
    try:
        n_seeds = int(job_form["n_seeds"].value())
    except (TypeError, ValueError):
        n_seeds = 1
    return {
        "study": study,
        "prompts": prompts,
        "ticked": ticked,
        "jobs": selectors.job_list(study=study)[:100],
        "totals": selectors.study_generation_totals(study=study),
        "import_form": extra.pop("import_form", None) or PromptImportForm(),
        "job_form": job_form,
        "backends": sorted(BACKENDS),
        "prices": costs.prices(),
        "cost_unit": costs.cost_unit(),
        "estimate": costs.jobs_estimate(
            backend=backend, n_prompts=n_prompts, n_seeds=n_seeds
        ),
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
    return render(
        request, "generation/study_detail.html", _study_context(study, request)
    )


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
            request.session[_added_key(study)] = [p.pk for p in result.prompts]
            messages.success(
                request,
                f"Added {len(result.created)} prompts"
                + (
                    f" ({len(result.existing)} were already there)"
                    if result.existing
                    else ""
                )
                + ". They are ticked under Generate images.",
            )
            return redirect("generation:study", study_id=study.pk)
    return render(
        request,
        "generation/study_detail.html",
        _study_context(study, request, import_form=form),
        status=400,
    )


def _chosen_prompts(prompts: list, data: dict) -> list:
    chosen = prompts
    if data["prompts"]:
        ids = {int(i) for i in data["prompts"]}
        chosen = [p for p in prompts if p.pk in ids]
    if data["domain"].strip():
        chosen = [p for p in chosen if p.domain == data["domain"].strip().lower()]
    return chosen


def _confirm_or_queue(request: HttpRequest, study: Study, chosen: list, data: dict):
    """Validate, then queue, or (paid backend, not yet confirmed for exactly this
    request) render the confirmation. Raises PalateError on bad input."""
    backend, model, params = services.job_validate(
        backend=data["backend"],
        model=data["model"],
        n_seeds=data["n_seeds"],
        params=data["params"],
    )
    if not chosen:
        raise InvalidInput("No prompts to generate from.")
    estimate = costs.jobs_estimate(
        backend=backend, n_prompts=len(chosen), n_seeds=data["n_seeds"]
    )
    fp = confirm.fingerprint(
        study_id=study.pk,
        backend=backend,
        model=model,
        n_seeds=data["n_seeds"],
        params=params,
        prompt_ids=[p.pk for p in chosen],
    )
    if estimate["paid"] and not confirm.is_confirmed(request.POST.get("confirm"), fp):
        return render(
            request,
            "generation/confirm_jobs.html",
            {
                "study": study,
                "estimate": estimate,
                "model": model,
                "chosen": chosen,
                "data": data,
                "params_json": request.POST.get("params", ""),
                "token": confirm.token_for(fp),
            },
        )
    return services.jobs_create(
        prompts=chosen,
        backend=backend,
        model=model,
        n_seeds=data["n_seeds"],
        params=params,
        created_by=request.user,
    )


@require_POST
@staff_member_required
def jobs_add(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    prompts = list(selectors.prompt_list(study=study))
    form = JobCreateForm(request.POST, prompt_choices=[(p.pk, p.text) for p in prompts])
    if form.is_valid():
        try:
            result = _confirm_or_queue(
                request,
                study,
                _chosen_prompts(prompts, form.cleaned_data),
                form.cleaned_data,
            )
        except PalateError as exc:
            form.add_error(None, exc.message)
        else:
            if isinstance(result, HttpResponse):
                return result  # the confirmation step
            request.session.pop(_added_key(study), None)
            messages.success(
                request,
                f"Queued {len(result)} jobs, {sum(j.n_seeds for j in result)} images.",
            )
            if len(result) == 1:
                return redirect("generation:job", job_id=result[0].pk)
            return redirect("generation:study", study_id=study.pk)
    return render(
        request,
        "generation/study_detail.html",
        _study_context(study, request, job_form=form),
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
