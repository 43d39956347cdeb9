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
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.exceptions import InvalidInput, NotFound, PalateError

from ..models import Export, Study

logger = logging.getLogger(__name__)

# A "running" export whose heartbeat is older than this belongs to a dead worker
# and may be taken over by a redelivered task.
STALE_AFTER = timedelta(minutes=15)


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
    from ..tasks import export_dataset

    export = export_create(**kwargs)
    transaction.on_commit(lambda: export_dataset.delay(export.pk))
    return export


def _claim(export_id: int) -> bool:
    now = timezone.now()
    stale = Q(status=Export.Status.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    return (
        Export.objects.filter(pk=export_id)
        .filter(Q(status=Export.Status.QUEUED) | stale)
        .update(
            status=Export.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            stage="starting",
            progress=0.0,
            error="",
        )
        == 1
    )


def export_file(export: Export) -> Path:
    """The finished archive of an export (NotFound until there is one)."""
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
    export that is finished (or running elsewhere) is returned as it is."""
    if not _claim(export_id):
        try:
            return Export.objects.get(pk=export_id)
        except Export.DoesNotExist:
            raise NotFound(f"No export {export_id}.") from None
    from .export import ExportOptions, dataset_export

    export = Export.objects.select_related("study").get(pk=export_id)
    root = Path(settings.PALATE_EXPORT_DIR)
    work = root / f".work-{export.pk}"
    shutil.rmtree(work, ignore_errors=True)
    name = f"{export.study.slug}-{export.format}"

    def progress(stage: str, done: int, total: int) -> None:
        Export.objects.filter(pk=export.pk).update(
            stage=stage[:40],
            progress=round(0.9 * min(done / total, 1.0), 4) if total else 0.0,
            heartbeat_at=timezone.now(),
        )

    try:
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
        size = archive_write(work / name, root / rel)
    except Exception as exc:  # any failure: recorded on the export for staff
        message = (
            exc.message
            if isinstance(exc, PalateError)
            else (f"{type(exc).__name__}: {exc}")
        )
        Export.objects.filter(pk=export.pk).update(
            status=Export.Status.FAILED,
            error=message,
            report={"error": message},
            finished_at=timezone.now(),
        )
        if not isinstance(exc, PalateError):
            logger.exception("export #%s failed", export.pk)
        return Export.objects.get(pk=export.pk)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["path"] = str(rel)
    Export.objects.filter(pk=export.pk).update(
        status=Export.Status.SUCCEEDED,
        stage="done",
        progress=1.0,
        path=str(rel),
        size_bytes=size,
        report=report,
        finished_at=timezone.now(),
    )
    return Export.objects.get(pk=export.pk)


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
