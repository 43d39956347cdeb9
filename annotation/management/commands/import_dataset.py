"""``import_dataset STUDY PATH``: a Palate dataset export (folder or the zip the
API serves, any format) into a study that has no images yet."""

import json
import tempfile
import zipfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Study
from annotation.services.dataset_import import dataset_import
from core.exceptions import PalateError


def _root_of(folder: Path) -> Path:
    """The folder holding ratings/ (the archive wraps it in one more folder)."""
    if (folder / "ratings").is_dir():
        return folder
    inner = [p for p in folder.iterdir() if (p / "ratings").is_dir()]
    if len(inner) != 1:
        raise CommandError(f"{folder} holds no Palate dataset export.")
    return inner[0]


class Command(BaseCommand):
    help = (
        "Import a Palate dataset export (export_dataset's folder or the API's zip; "
        "Parquet, JSONL or CSV with images) into STUDY, which must have no images: "
        "images byte for byte, annotators under the same pseudonymous ids, ratings "
        "with their scores, times and stored splits."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug or id")
        parser.add_argument("path", help="export folder or .zip")

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
        with tempfile.TemporaryDirectory(prefix="palate-import-") as tmp:
            if path.is_file():
                if not zipfile.is_zipfile(path):
                    raise CommandError(f"{path} is neither a folder nor a zip archive.")
                with zipfile.ZipFile(path) as zf:
                    zf.extractall(tmp)  # member names are sanitised by zipfile
                root = _root_of(Path(tmp))
            else:
                root = _root_of(path)
            try:
                report = dataset_import(study=study, root=root)
            except PalateError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(json.dumps(report, indent=2))
