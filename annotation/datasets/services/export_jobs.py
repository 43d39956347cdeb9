"""Dataset exports as jobs: created by the API or the staff page, run by a Celery
worker (``annotation.tasks.export_dataset``), finished as one zip archive under
``PALATE_EXPORT_DIR`` for download.

The writer (``export``, which imports pyarrow) is imported only when an export
runs, so the web process never loads it.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotation.models import Export, Study
from core.exceptions import Gone, InvalidInput, NotFound, PalateError
from core.jobs import (
    Heartbeat,
    StillRunning,
    dead_worker_reason,
    stale_rows_fail,
    takeover_wait,
)

logger = logging.getLogger(__name__)


def export_create(
    *,
    study: Study,
    fmt: str = "parquet",
    images: str | None = None,
    include_excluded: bool = False,
    include_invalid: bool = False,
    user=None,
) -> Export:
    """A queued export (options checked now, so a bad request fails at once)."""
    images = images or ("embed" if fmt == "parquet" else "path")
    if fmt not in Export.Format.values:
        raise InvalidInput(
            f"Unknown format '{fmt}': choose one of {', '.join(Export.Format.values)}."
        )
    if images not in Export.Images.values:
        raise InvalidInput(
            f"Unknown images mode '{images}': choose one of "
            f"{', '.join(Export.Images.values)}."
        )
    if images == "embed" and fmt != "parquet":
        raise InvalidInput(
            "Images can only be embedded in Parquet; choose images 'path' or 'none' "
            "for JSONL and CSV."
        )
    return Export.objects.create(
        study=study,
        format=fmt,
        images=images,
        include_excluded=include_excluded,
        include_invalid=include_invalid,
        created_by=user if user is not None and user.is_authenticated else None,
    )


def export_enqueue(**kwargs) -> Export:
    """Create an export and hand it to a worker once the transaction commits."""
    from annotation.tasks import export_dataset

    export = export_create(**kwargs)
    transaction.on_commit(lambda: export_dataset.delay(export.pk))
    return export


def _claim(export_id: int):
    """Queued → running, or take over a running export whose worker died (its
    heartbeat older than ``takeover_after()``), by compare-and-set on the row so two
    deliveries never both run it. Returns the new ``started_at`` (this run's
    token) or None when there is nothing to run; raises StillRunning while a live
    worker has it."""
    row = Export.objects.filter(pk=export_id).values("status", "heartbeat_at").first()
    if row is None:
        raise NotFound(f"No export {export_id}.")
    if row["status"] == Export.Status.RUNNING:
        wait = takeover_wait(row["heartbeat_at"])
        if wait > 0:
            raise StillRunning(wait + 1)
        mine = Q(status=Export.Status.RUNNING, heartbeat_at=row["heartbeat_at"])
    elif row["status"] == Export.Status.QUEUED:
        mine = Q(status=Export.Status.QUEUED)
    else:
        return None
    now = timezone.now()
    taken = (
        Export.objects.filter(mine, pk=export_id).update(
            status=Export.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            stage="starting",
            progress=0.0,
            error="",
        )
        == 1
    )
    return now if taken else None


def export_partial_remove(*, export_id: int) -> None:
    """Delete what an unfinished run of the export left: its work folder (with the
    writer's ``.partial`` folders) and a half-written archive."""
    root = Path(settings.PALATE_EXPORT_DIR)
    shutil.rmtree(root / f".work-{export_id}", ignore_errors=True)
    folder = root / str(export_id)
    for tmp in folder.glob(".*.partial"):
        tmp.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def exports_fail_stale(*, now=None) -> int:
    """Fail running exports whose worker is gone (no heartbeat for
    ``stale_after()``) with the reason, and remove their partial files. The beat
    task ``annotation.sweep_stale_exports`` calls this every
    ``PALATE_JOB_SWEEP_S``."""
    now = now or timezone.now()
    reason = dead_worker_reason()
    failed = stale_rows_fail(
        model=Export,
        running=Export.Status.RUNNING,
        cleanup=lambda pk: export_partial_remove(export_id=pk),
        failed={
            "status": Export.Status.FAILED,
            "stage": "failed",
            "error": reason,
            "report": {"error": reason},
            "finished_at": now,
        },
        now=now,
    )
    for pk in failed:
        logger.warning("export #%s failed: its worker stopped", pk)
    return len(failed)


def export_file(export: Export) -> Path:
    """The finished archive of an export (NotFound until there is one)."""
    if export.withdrawn_at is not None:
        raise Gone(f"Export {export.pk} was withdrawn: {export.withdrawn_reason}")
    root = Path(settings.PALATE_EXPORT_DIR).resolve()
    path = (root / export.path).resolve() if export.path else None
    if (
        export.status != Export.Status.SUCCEEDED
        or path is None
        or root not in path.parents
        or not path.is_file()
    ):
        raise NotFound(f"Export {export.pk} has no file to download ({export.status}).")
    return path


def export_execute(*, export_id: int) -> Export:
    """Run a queued export to the end: the dataset into a work folder, then one
    zip archive beside it, renamed into place when complete. Idempotent: an
    export that is finished is returned as it is; one whose worker died is taken
    over and written again from the start (StillRunning while a live worker has
    it, see ``core.jobs``)."""
    token = _claim(export_id)
    if token is None:
        return Export.objects.get(pk=export_id)
    export_partial_remove(export_id=export_id)
    mine = Export.objects.filter(
        pk=export_id, status=Export.Status.RUNNING, started_at=token
    )
    with Heartbeat(lambda: mine.update(heartbeat_at=timezone.now())):
        try:
            rel, size, report = _write(
                Export.objects.select_related("study").get(pk=export_id), mine
            )
        except Exception as exc:  # any failure: recorded on the export for staff
            message = (
                exc.message
                if isinstance(exc, PalateError)
                else (f"{type(exc).__name__}: {exc}")
            )
            mine.update(
                status=Export.Status.FAILED,
                error=message,
                report={"error": message},
                finished_at=timezone.now(),
            )
            if not isinstance(exc, PalateError):
                logger.exception("export #%s failed", export_id)
            return Export.objects.get(pk=export_id)
        finally:
            shutil.rmtree(_work(export_id), ignore_errors=True)
    report["path"] = str(rel)
    if not mine.filter(withdrawn_at__isnull=True).update(
        status=Export.Status.SUCCEEDED,
        stage="done",
        progress=1.0,
        path=str(rel),
        size_bytes=size,
        report=report,
        finished_at=timezone.now(),
    ):
        # Failed (a person in it was erased, or the sweep gave up on this run)
        # while it was written: the archive must not stay.
        shutil.rmtree(_work(export_id).with_name(str(export_id)), ignore_errors=True)
    return Export.objects.get(pk=export_id)


def exports_withdraw(*, study_ids: list[int], reason: str, now) -> int:
    """Withdraw every export of these studies (an annotator in them was erased):
    finished archives are deleted once the caller's transaction commits and the
    export says why; queued and running ones are failed with the reason (a
    running one deletes its own archive when it finds that out). Returns how
    many exports were affected."""
    of_studies = Export.objects.filter(study_id__in=study_ids)
    done = list(
        of_studies.filter(
            status=Export.Status.SUCCEEDED, withdrawn_at__isnull=True
        ).values_list("pk", flat=True)
    )
    Export.objects.filter(pk__in=done).update(
        withdrawn_at=now, withdrawn_reason=reason[:300], size_bytes=None
    )
    live = of_studies.filter(
        status__in=[Export.Status.QUEUED, Export.Status.RUNNING]
    ).update(
        status=Export.Status.FAILED,
        error=reason,
        report={"error": reason},
        finished_at=now,
        withdrawn_at=now,
        withdrawn_reason=reason[:300],
    )
    root = Path(settings.PALATE_EXPORT_DIR)
    transaction.on_commit(
        lambda: [shutil.rmtree(root / str(pk), ignore_errors=True) for pk in done]
    )
    return len(done) + live


def _work(export_id: int) -> Path:
    return Path(settings.PALATE_EXPORT_DIR) / f".work-{export_id}"


def _write(export: Export, mine) -> tuple[Path, int, dict]:
    """The dataset into the work folder, then the archive; ``mine`` is the row
    while this run owns it (progress written there is also a heartbeat)."""
    from annotation.datasets.services.export import ExportOptions, dataset_export

    name = f"{export.study.slug}-{export.format}"
    work = _work(export.pk)

    def progress(stage: str, done: int, total: int) -> None:
        mine.update(
            stage=stage[:40],
            progress=round(0.9 * min(done / total, 1.0), 4) if total else 0.0,
            heartbeat_at=timezone.now(),
        )

    report = dataset_export(
        study=export.study,
        out=work / name,
        options=ExportOptions(
            fmt=export.format,
            images=export.images,
            include_excluded=export.include_excluded,
            include_invalid=export.include_invalid,
        ),
        on_progress=progress,
    )
    progress("archive", 1, 1)
    rel = Path(str(export.pk)) / f"{name}.zip"
    size = archive_write(work / name, Path(settings.PALATE_EXPORT_DIR) / rel)
    return rel, size, report


# Zip entries get this fixed time, so an archive depends on its content alone.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def iter_files(root: Path) -> list[Path]:
    """Every file under ``root`` in a fixed order."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def archive_write(folder: Path, target: Path) -> int:
    """Zip ``folder`` (files in sorted order, stored: Parquet and images are
    compressed already) to ``target`` through a temporary name; returns its size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for path in iter_files(folder):
                info = zipfile.ZipInfo(
                    f"{folder.name}/{path.relative_to(folder).as_posix()}", _ZIP_EPOCH
                )
                info.external_attr = 0o644 << 16
                with (
                    path.open("rb") as src,
                    zf.open(info, "w", force_zip64=True) as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)
        tmp.rename(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target.stat().st_size
