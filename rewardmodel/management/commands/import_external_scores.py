"""``import_external_scores STUDY PATH``: population mean scores from elsewhere
(e.g. AVA-style) that train the population part of the reward model. Ratings by
individual people are study ratings: use ``import_ratings``."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.exceptions import PalateError
from rewardmodel import services
from rewardmodel.dataset_readers import read_table

from .train_reward_model import study_find


class Command(BaseCommand):
    help = (
        "Import external population scores. Columns: score, and one of image "
        "(study image id), sha256 or path (image file, relative to the data file); "
        "optional n (ratings averaged)."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug or id")
        parser.add_argument("path", help=".csv, .jsonl or .parquet")
        parser.add_argument("--source", help="source name (default: file name)")
        parser.add_argument("--scale-min", type=float)
        parser.add_argument("--scale-max", type=float)
        parser.add_argument(
            "--weight", type=float, default=0.5, help="weight next to our ratings"
        )

    def handle(self, *args, **opts):
        study = study_find(opts["study"])
        path = Path(opts["path"])
        if not path.is_file():
            raise CommandError(f"No file {path}.")
        source = opts["source"] or path.stem.lower().replace("_", "-")[:80]
        try:
            result = services.external_scores_import(
                study=study,
                rows=[row for _, row in read_table(path)],  # one per item, no images
                source_name=source,
                base_dir=path.parent,
                scale_min=opts["scale_min"],
                scale_max=opts["scale_max"],
                weight=opts["weight"],
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(json.dumps(result))
