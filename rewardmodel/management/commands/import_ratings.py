"""``import_ratings STUDY SOURCE``: a per-annotator ratings dataset (images +
rater id + score + demographics) as real study ratings; with ``--train``, also
embeds, trains on its train split, selects on validation and prints the test
metrics next to the baselines (PAMELA in one command)."""

import json

from django.core.management.base import BaseCommand, CommandError

from annotation.datasets import services as datasets_services
from annotation.studies import services as studies_services
from annotation.studies.models import Study
from core.exceptions import PalateError
from rewardmodel import services
from rewardmodel.dataset_readers import parse_mapping, records_read
from rewardmodel.models import TrainingRun

from .train_reward_model import run_with_progress, study_find, version_print


class Command(BaseCommand):
    help = (
        "Import ratings by individual people as study ratings. SOURCE: a .csv, "
        ".jsonl or .parquet file (a row per rating), a folder in PAMELA's layout "
        "(--layout pamela), or hf://bethgelab/PAMELA (network). Published splits "
        "are kept. Example (PAMELA, one command): import_ratings pamela "
        "hf://bethgelab/PAMELA --layout pamela --create --scale-min 1 "
        "--scale-max 10 --train"
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug or id")
        parser.add_argument("source", help="file, folder or hf://owner/name")
        parser.add_argument("--layout", choices=["table", "pamela"], default="table")
        parser.add_argument(
            "--map",
            action="append",
            metavar="FIELD=COLUMN",
            help="column mapping, repeatable: rater=, score=, image=, sha256=, "
            "split=, demographics=a,b,c, meta=a,b",
        )
        parser.add_argument("--dataset", help="name scoping the rater ids")
        parser.add_argument(
            "--skip-unreadable-images",
            action="store_true",
            help="skip an image PIL cannot load (with its ratings) and list it, "
            "instead of refusing the import; always on for PAMELA (--layout pamela "
            "or hf://: the published dataset has at least one)",
        )
        parser.add_argument(
            "--create", action="store_true", help="create the study if missing"
        )
        parser.add_argument("--scale-min", type=int, help="with --create")
        parser.add_argument("--scale-max", type=int, help="with --create")
        parser.add_argument(
            "--train", action="store_true", help="then train and print test metrics"
        )
        parser.add_argument("--backbone", help="with --train")
        parser.add_argument("--seed", type=int, default=0)

    def _study(self, opts) -> Study:
        existing = Study.objects.filter(slug=opts["study"]).first()
        if existing is not None or not opts["create"]:
            return existing or study_find(opts["study"])
        if opts["scale_min"] is None or opts["scale_max"] is None:
            raise CommandError("--create needs --scale-min and --scale-max.")
        try:
            return studies_services.study_create(
                name=opts["study"],
                slug=opts["study"],
                scale_min=opts["scale_min"],
                scale_max=opts["scale_max"],
                scale_labels=[],
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None

    def handle(self, *args, **opts):
        try:
            mapping = parse_mapping(opts["map"])
            records = records_read(
                opts["source"], layout=opts["layout"], mapping=mapping
            )
            study = self._study(opts)
            dataset = opts["dataset"] or opts["source"].rstrip("/").split("/")[-1]
            result = datasets_services.ratings_import(
                study=study,
                records=records,
                dataset=dataset,
                skip_unreadable_images=opts["skip_unreadable_images"]
                or opts["layout"] == "pamela"
                or opts["source"].startswith("hf://"),
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(json.dumps(result))
        if result["unreadable_images_skipped"]:
            ids = result["unreadable_images"]
            shown = ", ".join(ids[:20]) + (
                f" (and {len(ids) - 20} more)" if len(ids) > 20 else ""
            )
            self.stderr.write(
                f"skipped {len(ids)} image(s) that cannot be read as images, with "
                f"their {result['ratings_skipped_unreadable_image']} rating(s): "
                f"{shown}"
            )
        if not opts["train"]:
            return
        config = {"seed": opts["seed"]}
        if opts["backbone"]:
            config["backbone"] = opts["backbone"]
        try:
            run = services.training_run_create(
                study=study, trigger=TrainingRun.Trigger.COMMAND, config=config
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        version_print(self, run_with_progress(run, self.stderr))
