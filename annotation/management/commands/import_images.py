"""import_images STUDY PATH: a folder or zip of images into a study's rating pool."""

import zipfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation import services
from annotation.models import Study
from core.exceptions import InvalidInput

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def _sources(path: Path):
    """Yield (name, read-callable) for each candidate file, sorted by name."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                yield str(p.relative_to(path)), p.read_bytes
    elif zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if not info.is_dir() and not Path(info.filename).name.startswith("."):
                yield info.filename, lambda info=info: archive.read(info)
    else:
        raise CommandError(f"{path} is neither a folder nor a zip file.")


class Command(BaseCommand):
    help = (
        "Import a folder or zip of PNG/JPEG/WebP images into a study. Non-images, "
        "images over the pixel limit and duplicates are reported and skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug or id")
        parser.add_argument("path", type=Path, help="folder or .zip file")
        parser.add_argument("--domain", default="", help="domain/category for all")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, study, path, domain, no_progress, **options):
        study_obj = Study.objects.filter(slug=study).first() or (
            Study.objects.filter(pk=int(study)).first() if study.isdigit() else None
        )
        if study_obj is None:
            raise CommandError(f"No study with slug or id '{study}'.")
        if not path.exists():
            raise CommandError(f"{path} does not exist.")
        items = list(_sources(path))
        imported, refused = 0, []
        for name, read in tqdm(
            items, desc="importing", unit="img", disable=no_progress
        ):
            if Path(name).suffix.lower() not in SUFFIXES:
                refused.append(f"{name}: not a .png, .jpg, .jpeg or .webp file.")
                continue
            try:
                services.image_create(
                    study=study_obj,
                    data=read(),
                    filename=name,
                    domain=domain,
                    provenance={"source": "import", "file": name},
                )
                imported += 1
            except InvalidInput as exc:
                refused.append(exc.message)
        for message in refused:
            self.stderr.write(f"skipped {message}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {imported} image(s) into '{study_obj.slug}'; "
                f"skipped {len(refused)}."
            )
        )
