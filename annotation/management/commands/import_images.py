"""import_images STUDY PATH: a folder or zip of images into a study's rating pool.

Each file is read with a size cap (``PALATE_MAX_UPLOAD_BYTES``): a zip entry is
streamed and abandoned past the cap, whatever size its header claims, so a small
zip holding a huge entry costs no memory; links that lead out of the folder are
refused. The report lists each file skipped and each one normalised (rotated by
its EXIF orientation, converted to 8-bit sRGB, first frame of an animation).
"""

import stat
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation import services
from annotation.models import Study
from core.exceptions import InvalidInput

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class _TooLarge(Exception):
    pass


def _read_capped(stream, cap: int) -> bytes:
    """At most ``cap`` bytes from ``stream``; _TooLarge as soon as there are more."""
    chunks, total = [], 0
    while chunk := stream.read(min(1 << 20, cap + 1 - total)):
        total += len(chunk)
        if total > cap:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _folder_sources(path: Path):
    root = path.resolve()
    for p in sorted(path.rglob("*")):
        if p.name.startswith(".") or p.is_dir():
            continue
        name = str(p.relative_to(path))
        if p.is_symlink() or not p.resolve().is_relative_to(root):
            yield name, None, "a link (links are not followed)."
            continue
        if p.is_file():
            yield name, (lambda p=p, cap=None: _read_file(p, cap)), None


def _read_file(p: Path, cap: int) -> bytes:
    with p.open("rb") as f:
        return _read_capped(f, cap)


def _zip_sources(archive: zipfile.ZipFile):
    for info in sorted(archive.infolist(), key=lambda i: i.filename):
        if info.is_dir() or Path(info.filename).name.startswith("."):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            yield info.filename, None, "a link (links are not followed)."
            continue

        def read(info=info, cap=None) -> bytes:
            if info.file_size > cap:  # the header's claim; the read checks too
                raise _TooLarge
            with archive.open(info) as f:
                return _read_capped(f, cap)

        yield info.filename, read, None


def _sources(path: Path):
    """Yield (name, read(cap=...) or None, reason refused) for each candidate file,
    sorted by name."""
    if path.is_dir():
        yield from _folder_sources(path)
    elif zipfile.is_zipfile(path):
        # Left open while the entries are read (the command ends soon after).
        yield from _zip_sources(zipfile.ZipFile(path))
    else:
        raise CommandError(f"{path} is neither a folder nor a zip file.")


class Command(BaseCommand):
    help = (
        "Import a folder or zip of PNG/JPEG/WebP images into a study. Non-images, "
        "files over the size or pixel limit, links and duplicates are reported and "
        "skipped; images rotated, converted or reduced to one frame are reported."
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
        imported, refused, normalised = 0, [], []
        for name, read, reason in tqdm(
            items, desc="importing", unit="img", disable=no_progress
        ):
            problem, notes = self._import_one(study_obj, name, read, reason, domain)
            if problem:
                refused.append(problem)
                continue
            imported += 1
            if notes:
                normalised.append(f"{name}: {'; '.join(notes)}")
        for message in refused:
            self.stderr.write(f"skipped {message}")
        for message in normalised:
            self.stdout.write(f"normalised {message}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {imported} image(s) into '{study_obj.slug}' "
                f"({len(normalised)} normalised); skipped {len(refused)}."
            )
        )

    def _import_one(self, study, name, read, reason, domain):
        """(why it was skipped or None, what was normalised)."""
        if reason:
            return f"{name}: {reason}", []
        if Path(name).suffix.lower() not in SUFFIXES:
            return f"{name}: not a .png, .jpg, .jpeg or .webp file.", []
        cap = settings.PALATE_MAX_UPLOAD_BYTES
        try:
            data = read(cap=cap)
        except _TooLarge:
            return f"{name}: larger than the {cap}-byte limit.", []
        try:
            image = services.image_create(
                study=study,
                data=data,
                filename=name,
                domain=domain,
                provenance={"source": "import", "file": name},
            )
        except InvalidInput as exc:
            return exc.message, []
        return None, image.provenance.get("normalised", [])
