"""The researchers' dashboard: thin, staff-only function views.

Reads come from ``dashboard.selectors`` (which composes each app's selectors),
writes go through each app's services. Every control is a plain form or link;
htmx swaps the annotator table when sorting/filtering and polls a training
run's status partial until the run has finished.
"""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation.participants.models import ModerationEvent
from annotation.participants.selectors import participation_status
from annotation.quality import selectors as quality_selectors
from annotation.quality import services as quality_services
from annotation.quality.models import AttentionCheck
from annotation.quality.services import FLAG_LABELS
from annotation.studies import selectors as studies_selectors
from annotation.studies.models import Annotator, Study
from core.confirm import ask, is_confirmed
from core.exceptions import PalateError
from rewardmodel import selectors as rm
from rewardmodel import services as rm_services
from rewardmodel.models import ModelVersion, TrainingRun

from . import actions, charts, confirmations, selectors
from .dealing_views import dealing_context
from .figures import figures_get
from .forms import ActionForm, AttentionCheckForm, NightlyForm, QualityConfigForm

POLL_SECONDS = 1
RUN_DONE = {
    TrainingRun.Status.SUCCEEDED,
    TrainingRun.Status.FAILED,
    TrainingRun.Status.SKIPPED,
}


def _study(study_id: int) -> Study:
    return get_object_or_404(Study, pk=study_id)


@require_GET
@staff_member_required
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/home.html",
        {
            "studies": studies_selectors.study_overview_list(),
            "generation": selectors.generation_summary(),
            "actives": (actives := selectors.active_versions()),
            "version": actives[0] if actives else None,
        },
    )


def _links(request: HttpRequest, study: Study) -> dict:
    join = request.build_absolute_uri(
        reverse("annotation:join", args=[study.slug]) + f"?t={study.invite_token}"
    )
    prolific = (
        join + "&PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}"
        "&SESSION_ID={{%SESSION_ID%}}"
    )
    return {"invite": join, "prolific": prolific}


@require_GET
@staff_member_required
def study(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study(study_id)
    data = studies_selectors.study_dashboard(study=study)
    return render(
        request,
        "dashboard/study.html",
        {
            "study": study,
            "tab": "progress",
            "p": data,
            "links": _links(request, study),
            "histogram": charts.bars(
                [(str(k), v) for k, v in data["histogram"]],
                title="Images by number of valid ratings",
                highlight_last=True,
            ),
            "per_hour": charts.bars(
                [(t.strftime("%H:00"), n) for t, n in data["per_hour"]],
                title="Ratings collected per hour, last "
                f"{data['per_hour_hours']} hours",
            ),
            "events": ModerationEvent.objects.filter(study=study)
            .select_related("annotator", "user")
            .order_by("-created_at", "-pk")[:10],
            **dealing_context(study),
        },
    )


def _table_params(request: HttpRequest) -> dict:
    return {
        "sort": request.GET.get("sort", "annotator"),
        "descending": request.GET.get("dir", "asc") == "desc",
        "flag": request.GET.get("flag", ""),
        "status": request.GET.get("status", ""),
        "search": request.GET.get("q", "").strip()[:64],
    }


def _page_number(request: HttpRequest) -> int:
    value = request.GET.get("page", "1")
    return int(value) if value.isdigit() and len(value) < 7 else 1


@require_GET
@staff_member_required
def annotators(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study(study_id)
    params = _table_params(request)
    table = selectors.annotator_table(study=study, page=_page_number(request), **params)
    context = {
        "study": study,
        "tab": "annotators",
        "annotator_base": reverse("dashboard:annotators", args=[study.pk]),
        "t": table,
        "params": params,
        "flag_labels": FLAG_LABELS,
        "statuses": Annotator.Status.choices,
        "columns": [
            ("annotator", "Annotator"),
            ("ratings", "Ratings"),
            ("accuracy", "Pairwise acc."),
            ("spearman", "Spearman"),
            ("mae", "MAE"),
            ("change", "Δ acc."),
            ("agreement", "Agreement"),
            ("retest", "Retest"),
            ("median_ms", "Median time"),
            ("flags", "Flags"),
            ("status", "Status"),
        ],
    }
    if request.htmx and request.htmx.target == "annotator-table":
        return render(request, "dashboard/annotators.html#table", context)
    context["chart"] = charts.scatter(
        table["chart_points"],
        title="Prediction quality against number of ratings",
        x_label="ratings given",
        y_label="pairwise accuracy (held out)",
        y_range=(0.0, 1.0),
    )
    return render(request, "dashboard/annotators.html", context)


@require_GET
@staff_member_required
def annotator(request: HttpRequest, study_id: int, annotator_id: int) -> HttpResponse:
    study = _study(study_id)
    person = get_object_or_404(Annotator, pk=annotator_id)
    d = selectors.annotator_detail(study=study, annotator=person)
    return render(
        request,
        "dashboard/annotator.html",
        {
            "study": study,
            "tab": "annotators",
            "person": person,
            "d": d,
            "distribution": charts.bars(
                [(str(v), n) for v, n in d["distribution"]],
                title="Their scores",
            ),
            "history_chart": charts.line(
                [(f"v{m.version_id}", m.pairwise_accuracy) for m in d["history"]],
                title="Pairwise accuracy across versions",
            ),
            "heldout_chart": _heldout_chart(d["heldout"], study),
            "action_form": ActionForm(),
            "here": participation_status(annotator=person, study=study),
        },
    )


def _heldout_chart(heldout, study: Study):
    """Predicted against actual score on the held-out images, with y = x. Scores
    are whole numbers, so points get a small fixed horizontal offset per image
    (from its id) to keep a column of equal scores readable."""
    if heldout is None:
        return None
    points = [
        (
            actual + ((image_id * 2654435761) % 1000 / 1000 - 0.5) * 0.36,
            predicted,
            f"image {image_id}: rated {actual:g}, predicted {predicted:.2f}",
        )
        for image_id, actual, predicted in heldout.points()
    ]
    ticks = list(range(study.scale_min, study.scale_max + 1))
    lo = min([float(study.scale_min)] + [p[1] for p in points])
    hi = max([float(study.scale_max)] + [p[1] for p in points])
    return charts.scatter(
        points,
        title="Predicted against actual score, held-out images",
        x_label="their score",
        y_label="predicted",
        x_range=(study.scale_min - 0.5, study.scale_max + 0.5),
        y_range=(lo - 0.25, hi + 0.25),
        diagonal=True,
        x_ticks=ticks if len(ticks) <= 11 else None,
    )


@require_POST
@staff_member_required
def annotator_action(
    request: HttpRequest, study_id: int, annotator_id: int
) -> HttpResponse:
    """Pause and resume act at once; exclude (this study), exclude from every
    study and erase show what they will do and act only once confirmed."""
    study = _study(study_id)
    person = get_object_or_404(Annotator, pk=annotator_id)
    form = ActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose an action.")
        return redirect("dashboard:annotator", study.pk, person.pk)
    action, reason = form.cleaned_data["action"], form.cleaned_data["reason"]
    if action in confirmations.FINAL_ACTIONS and not is_confirmed(request):
        return ask(request, confirmations.annotator_confirmation(study, person, action))
    try:
        message = actions.annotator_act(
            study=study, person=person, action=action, reason=reason, user=request.user
        )
    except PalateError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, message)
    return redirect("dashboard:annotator", study.pk, person.pk)


@require_GET
@staff_member_required
def quality(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study(study_id)
    config = quality_services.quality_config_get(study=study)
    return _quality_page(request, study, QualityConfigForm(instance=config))


def _quality_page(
    request, study, config_form, check_form=None, status: int = 200
) -> HttpResponse:
    from annotation.quality.models import AnnotatorQuality

    flagged = {}
    for flags in AnnotatorQuality.objects.filter(study=study).values_list(
        "flags", flat=True
    ):
        for f in flags or []:
            flagged[f] = flagged.get(f, 0) + 1
    return render(
        request,
        "dashboard/quality.html",
        {
            "study": study,
            "tab": "quality",
            "figures": figures_get(study=study),
            "retest": quality_selectors.study_retest(study=study),
            "flagged": [(FLAG_LABELS.get(k, k), k, n) for k, n in flagged.items()],
            "checks": AttentionCheck.objects.filter(study=study).order_by("-pk"),
            "config_form": config_form,
            "check_form": check_form or AttentionCheckForm(),
        },
        status=status,
    )


@require_POST
@staff_member_required
def quality_settings(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study(study_id)
    config = quality_services.quality_config_get(study=study)
    form = QualityConfigForm(request.POST, instance=config)
    if not form.is_valid():
        return _quality_page(request, study, form, status=400)
    try:
        quality_services.quality_config_update(study=study, **form.cleaned_data)
    except PalateError as exc:
        form.add_error(None, exc.message)
        return _quality_page(request, study, form, status=400)
    messages.success(request, "Quality-control settings saved.")
    return redirect("dashboard:quality", study.pk)


@require_POST
@staff_member_required
def check_upload(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study(study_id)
    form = AttentionCheckForm(request.POST, request.FILES)
    config_form = QualityConfigForm(
        instance=quality_services.quality_config_get(study=study)
    )
    if not form.is_valid():
        return _quality_page(request, study, config_form, form, status=400)
    f = form.cleaned_data["file"]
    try:
        quality_services.attention_check_create(
            study=study,
            data=f.read(),
            filename=f.name,
            expected_min=form.cleaned_data["expected_min"],
            expected_max=form.cleaned_data["expected_max"],
            instruction=form.cleaned_data["instruction"],
            user=request.user,
        )
    except PalateError as exc:
        form.add_error(None, exc.message)
        return _quality_page(request, study, config_form, form, status=400)
    messages.success(request, "Attention check added.")
    return redirect("dashboard:quality", study.pk)


@require_POST
@staff_member_required
def check_remove(request: HttpRequest, study_id: int, check_id: int) -> HttpResponse:
    """Delete a check nobody was dealt; retire (never deal again) one that was.
    Asks first, with what it will do."""
    study = _study(study_id)
    if not is_confirmed(request):
        try:
            return ask(request, confirmations.check_confirmation(study, check_id))
        except PalateError as exc:
            messages.error(request, exc.message)
            return redirect("dashboard:quality", study.pk)
    try:
        deleted = quality_services.attention_check_remove(
            study=study, check_id=check_id
        )
    except PalateError as exc:
        messages.error(request, exc.message)
        return redirect("dashboard:quality", study.pk)
    messages.success(
        request,
        "Attention check deleted."
        if deleted
        else "Attention check retired: it was already dealt, so its answers stay, "
        "and nobody is shown it again.",
    )
    return redirect("dashboard:quality", study.pk)


# --- the reward model -------------------------------------------------------------


@require_GET
@staff_member_required
def model(request: HttpRequest) -> HttpResponse:
    actives = selectors.active_versions()
    chosen = request.GET.get("version", "")
    version = next((v for v in actives if str(v.pk) == chosen), None) or (
        actives[0] if actives else None
    )
    runs = list(rm.training_run_list()[:10])
    schedule = rm.nightly_schedule()
    return render(
        request,
        "dashboard/model.html",
        {
            "version": version,
            "actives": actives,
            "baselines": selectors.baseline_table(version=version) if version else [],
            "versions": selectors.version_rows(actives=actives),
            "runs": runs,
            "busy": next((r for r in runs if r.status in ("queued", "running")), None),
            "studies": Study.objects.order_by("-created_at"),
            "schedule": schedule,
            "nightly_form": NightlyForm(
                initial={
                    "hour": int(schedule["hour"]) if schedule else 2,
                    "minute": int(schedule["minute"]) if schedule else 30,
                    "enabled": schedule["enabled"] if schedule else True,
                }
            ),
            "retest": [
                (s, quality_selectors.study_retest(study=s))
                for s in Study.objects.filter(pk=version.study_id)
            ]
            if version and version.study_id
            else [],
        },
    )


@require_POST
@staff_member_required
def retrain(request: HttpRequest) -> HttpResponse:
    study_id = request.POST.get("study") or None
    study = _study(int(study_id)) if study_id and study_id.isdigit() else None
    try:
        run = rm_services.training_run_enqueue(
            study=study, trigger=TrainingRun.Trigger.ADMIN, user=request.user
        )
    except PalateError as exc:
        messages.error(request, exc.message)
        return redirect("dashboard:model")
    return redirect("dashboard:run", run.pk)


@require_GET
@staff_member_required
def run(request: HttpRequest, run_id: int) -> HttpResponse:
    training = rm.training_run_get(run_id=run_id)
    if training is None:
        return render(request, "dashboard/run.html", {"missing": run_id}, status=404)
    context = {
        "run": training,
        "done": training.status in RUN_DONE,
        "poll": POLL_SECONDS,
        "version": getattr(training, "version", None),
        "comparison": rm.training_run_comparison(run=training),
    }
    if request.htmx:
        return render(request, "dashboard/run.html#status", context)
    return render(request, "dashboard/run.html", context)


@require_POST
@staff_member_required
def nightly(request: HttpRequest) -> HttpResponse:
    form = NightlyForm(request.POST)
    if form.is_valid():
        rm_services.nightly_schedule_set(
            hour=form.cleaned_data["hour"],
            minute=form.cleaned_data["minute"],
            enabled=form.cleaned_data["enabled"],
        )
        messages.success(
            request,
            "Nightly retraining set to {hour:02d}:{minute:02d} UTC.".format(
                **form.cleaned_data
            ),
        )
    else:
        messages.error(request, "Give an hour (0–23) and a minute (0–59).")
    return redirect("dashboard:model")


@require_POST
@staff_member_required
def promote(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_object_or_404(ModelVersion, pk=version_id)
    if not is_confirmed(request):
        return ask(request, confirmations.version_confirmation(version))
    try:
        rm_services.model_version_promote(
            version=version, force=True, user=request.user, reason="dashboard"
        )
    except PalateError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"v{version.pk} is now active.")
    return redirect("dashboard:model")


@require_POST
@staff_member_required
def rollback(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_object_or_404(ModelVersion, pk=version_id)
    if not is_confirmed(request):
        return ask(request, confirmations.version_confirmation(version))
    try:
        rm_services.model_version_rollback(
            version=version, user=request.user, reason="dashboard"
        )
    except PalateError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"v{version.pk} is active again.")
    return redirect("dashboard:model")
