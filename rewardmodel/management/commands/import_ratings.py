"""``import_ratings STUDY PATH --format csv/jsonl/parquet``: external aesthetic
scores (per-user or population means) to train the reward model jointly."""

import csv
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Study
from core.exceptions import PalateError
from rewardmodel import services


def read_rows(path: Path, fmt: str) -> list[dict]:
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise CommandError(f"Unknown format '{fmt}'.")


class Command(BaseCommand):
    help = (
        "Import external ratings. Columns: score, and one of image (study image id), "
        "sha256 or path (image file, relative to the data file); optional user "
        "(per-user ratings; without it each row is a population mean) and n."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug or id")
        parser.add_argument("path")
        parser.add_argument("--format", choices=["csv", "jsonl", "parquet"])
        parser.add_argument("--source", help="source name (default: file name)")
        parser.add_argument("--kind", choices=["population", "per_user"])
        parser.add_argument("--scale-min", type=float)
        parser.add_argument("--scale-max", type=float)
        parser.add_argument(
            "--weight",
            type=float,
            default=0.5,
            help="loss weight relative to our own ratings",
        )

    def handle(self, *args, **opts):
        s = opts["study"]
        study = Study.objects.filter(
            **({"pk": int(s)} if s.isdigit() else {"slug": s})
        ).first()
        if study is None:
            raise CommandError(f"No study '{s}'.")
        path = Path(opts["path"])
        if not path.is_file():
            raise CommandError(f"No file {path}.")
        fmt = opts["format"] or path.suffix.lstrip(".").lower()
        rows = read_rows(path, fmt)
        source = opts["source"] or path.stem.lower().replace("_", "-")[:80]
        try:
            result = services.external_ratings_import(
                study=study,
                rows=rows,
                source_name=source,
                base_dir=path.parent,
                kind=opts["kind"],
                scale_min=opts["scale_min"],
                scale_max=opts["scale_max"],
                weight=opts["weight"],
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(json.dumps(result))
