"""The study page's dealing card (issue 27): the policy, its settings (a form
through ``annotation.engine.services.dealing.dealing_policy_set``) and, per
annotator, how uncertain their model still is."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from annotation.engine.selectors import dealing_overview
from annotation.engine.services import dealing_policy_set
from annotation.studies.models import Study
from core.exceptions import PalateError

from .figures import figures_get
from .forms import DealingForm


def dealing_context(study: Study, form: DealingForm | None = None) -> dict:
    """What the study page's dealing card shows. The assignments by how they
    were dealt are a pass over them all: read from the study's kept figures
    (``figures``, computed off the request), which the card shows "as of" when,
    or as being computed."""
    figures = figures_get(study=study)
    return {
        "dealing": dealing_overview(study=study, dealt=figures.dealt or {}),
        "figures": figures,
        "dealing_form": form
        or DealingForm(
            initial={
                "policy": study.dealing_policy,
                "warmup": study.dealing_warmup,
                "band": study.dealing_band,
            }
        ),
    }


@require_POST
@staff_member_required
def dealing_settings(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    form = DealingForm(request.POST)
    if form.is_valid():
        try:
            dealing_policy_set(study=study, **form.cleaned_data)
        except PalateError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Dealing policy: {study.dealing_policy}.")
            return redirect("dashboard:study", study.pk)
    else:
        problems = "; ".join(
            f"{name}: {' '.join(errs)}" for name, errs in form.errors.items()
        )
        messages.error(request, f"Dealing not changed: {problems}")
    return redirect("dashboard:study", study.pk)
