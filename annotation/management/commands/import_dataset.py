"""``import_dataset STUDY PATH``: a Palate dataset export (folder or the zip the
API serves, any format) into a study that has no images yet."""

import json
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotation.datasets.services.import_export_file import dataset_import
from annotation.models import Study
from core.exceptions import PalateError

# Caps on a zip (docs/export.md, "Limits on imports"): a table shard is at most
# about 500 MB (export's shard_bytes), an image at most PALATE_MAX_UPLOAD_BYTES.
MAX_MEMBERS = 1_000_000
MAX_TABLE_BYTES = 1024 * 2**20
MAX_TOTAL_BYTES = 64 * 2**30
CHUNK = 2**20


def _root_of(folder: Path) -> Path:
    """The folder holding ratings/ (the archive wraps it in one more folder)."""
    if (folder / "ratings").is_dir():
        return folder
    inner = [p for p in folder.iterdir() if (p / "ratings").is_dir()]
    if len(inner) != 1:
        raise CommandError(f"{folder} holds no Palate dataset export.")
    return inner[0]


def _member_cap(name: str) -> int:
    if PurePosixPath(name).suffix.lower() in {".parquet", ".jsonl", ".csv"}:
        return MAX_TABLE_BYTES
    return settings.PALATE_MAX_UPLOAD_BYTES


def _target(into: Path, name: str, where: str) -> Path:
    """Where a member goes: inside ``into``, or refused (absolute, "..")."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
        raise CommandError(f"{where}: the name points outside the archive.")
    return into.joinpath(*parts)


def _extract(archive: Path, into: Path) -> None:
    """Extract member by member, streaming, refusing a member past its cap after
    reading at most the cap (the sizes in the zip's directory may lie)."""
    total = 0
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise CommandError(f"{archive.name}: more than {MAX_MEMBERS} members.")
        for info in members:
            if info.is_dir():
                continue
            cap = _member_cap(info.filename)
            where = f"{archive.name}: member {info.filename[:200]!r}"
            if info.file_size > cap:
                raise CommandError(f"{where} is over the {cap}-byte limit.")
            target = _target(into, info.filename, where)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                written = 0
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    total += len(chunk)
                    if written > cap:
                        raise CommandError(f"{where} is over the {cap}-byte limit.")
                    if total > MAX_TOTAL_BYTES:
                        raise CommandError(
                            f"{archive.name}: over {MAX_TOTAL_BYTES} bytes unpacked."
                        )
                    dst.write(chunk)


def _annotator_map(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        export_id, sep, public_id = item.partition("=")
        if not sep or not export_id.strip() or not public_id.strip():
            raise CommandError(f"--map-annotator {item!r}: use EXPORT_ID=PUBLIC_ID.")
        out[export_id.strip()] = public_id.strip()
    return out


class Command(BaseCommand):
    help = (
        "Import a Palate dataset export (export_dataset's folder or the API's zip; "
        "Parquet, JSONL or CSV with images) into STUDY, which must have no images: "
        "images byte for byte, ratings with their scores, times and stored "
        "splits. Raters become new annotators scoped to this import unless "
        "mapped to people here with --map-annotator or --same-annotators."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug or id")
        parser.add_argument("path", help="export folder or .zip")
        parser.add_argument(
            "--map-annotator",
            action="append",
            metavar="EXPORT_ID=PUBLIC_ID",
            help="the export's rater EXPORT_ID is the annotator PUBLIC_ID here "
            "(repeatable)",
        )
        parser.add_argument(
            "--same-annotators",
            action="store_true",
            help="every export rater id that names an annotator here is that "
            "person (an export of this same instance)",
        )

    def handle(self, *args, **opts):
        s = opts["study"]
        study = Study.objects.filter(
            **({"pk": int(s)} if s.isdigit() else {"slug": s})
        ).first()
        if study is None:
            raise CommandError(f"No study '{s}'.")
        path = Path(opts["path"])
        if not path.exists():
            raise CommandError(f"No such file or folder: {path}.")
        mapping = _annotator_map(opts["map_annotator"])
        tmp = Path(tempfile.mkdtemp(prefix="palate-import-"))
        try:
            if path.is_file():
                if not zipfile.is_zipfile(path):
                    raise CommandError(f"{path} is neither a folder nor a zip archive.")
                try:
                    _extract(path, tmp)
                except (zipfile.BadZipFile, OSError) as exc:
                    raise CommandError(
                        f"{path.name}: unreadable zip ({exc})."
                    ) from None
                root = _root_of(tmp)
            else:
                root = _root_of(path)
            report = dataset_import(
                study=study,
                root=root,
                annotator_map=mapping,
                same_annotators=opts["same_annotators"],
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.stdout.write(json.dumps(report, indent=2))
