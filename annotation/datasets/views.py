"""Staff page for a study's dataset exports: start one, watch it, download it.

A plain form starts an export (queued for a worker, never written in the
request); with htmx the list polls itself every two seconds while an export is
unfinished and stops once all are. Without JavaScript the page is a form and a
table with a reload link. Downloads go through the API's download endpoint.
"""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from annotation import selectors
from annotation.datasets.services import export_jobs
from annotation.models import Export, Study
from core.exceptions import PalateError

POLL_SECONDS = 2


def _context(study: Study, **extra) -> dict:
    exports = list(selectors.export_list(study=study)[:50])
    return {
        "study": study,
        "exports": exports,
        "busy": any(not e.is_finished for e in exports),
        "formats": Export.Format.choices,
        "image_modes": Export.Images.choices,
        "poll_seconds": POLL_SECONDS,
        **extra,
    }


@require_http_methods(["GET", "POST"])
@staff_member_required
def study_exports(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, pk=study_id)
    if request.method == "POST":
        fmt = request.POST.get("format", "parquet")
        try:
            export = export_jobs.export_enqueue(
                study=study,
                fmt=fmt,
                images=request.POST.get("images") or None,
                include_excluded=bool(request.POST.get("include_excluded")),
                include_invalid=bool(request.POST.get("include_invalid")),
                user=request.user,
            )
        except PalateError as exc:
            if request.htmx:
                return render(
                    request,
                    "annotation/staff/exports.html#export-list",
                    _context(study, error=exc.message),
                    status=400,
                )
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Export {export.pk} queued.")
            if request.htmx:
                return render(
                    request,
                    "annotation/staff/exports.html#export-list",
                    _context(study),
                )
        return redirect("annotation:study_exports", study_id=study.pk)
    return render(request, "annotation/staff/exports.html", _context(study))


@require_GET
@staff_member_required
def study_exports_list(request: HttpRequest, study_id: int) -> HttpResponse:
    """The list fragment (what the page polls)."""
    study = get_object_or_404(Study, pk=study_id)
    return render(request, "annotation/staff/exports.html#export-list", _context(study))
