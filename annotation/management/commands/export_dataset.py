"""``export_dataset STUDY OUT --format parquet|jsonl|csv``: a study's dataset as
Parquet in the Hugging Face datasets layout (or JSONL / CSV), with a progress bar."""

import json

from django.core.management.base import BaseCommand, CommandError

from annotation.datasets.services.export import ExportOptions, dataset_export
from annotation.models import Study
from core.exceptions import PalateError


class Command(BaseCommand):
    help = (
        "Export a study's ratings, images and annotators to the folder OUT: Parquet "
        "in the Hugging Face datasets layout (one config per table, the five "
        "stored splits, a README.md dataset card), or JSONL / CSV. Excluded "
        "annotators and invalid ratings are left out unless asked for."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug or id")
        parser.add_argument("out", help="folder to create (must not exist or be empty)")
        parser.add_argument(
            "--format", choices=["parquet", "jsonl", "csv"], default="parquet"
        )
        parser.add_argument(
            "--images",
            choices=["embed", "path", "none"],
            help="embed the bytes (Parquet only; its default), write files beside "
            "the tables (path; the default for JSONL/CSV), or leave them out",
        )
        parser.add_argument(
            "--include-excluded",
            action="store_true",
            help="keep excluded annotators and their ratings",
        )
        parser.add_argument(
            "--include-invalid", action="store_true", help="keep invalid ratings"
        )
        parser.add_argument(
            "--license", default="other", help="licence id for the dataset card"
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace OUT (swapped in only when the new export is complete)",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress bar"
        )

    def handle(self, *args, **opts):
        s = opts["study"]
        study = Study.objects.filter(
            **({"pk": int(s)} if s.isdigit() else {"slug": s})
        ).first()
        if study is None:
            raise CommandError(f"No study '{s}'.")
        fmt = opts["format"]
        options = ExportOptions(
            fmt=fmt,
            images=opts["images"] or ("embed" if fmt == "parquet" else "path"),
            include_excluded=opts["include_excluded"],
            include_invalid=opts["include_invalid"],
            license=opts["license"],
        )
        bar = None

        def progress(stage: str, done: int, total: int) -> None:
            nonlocal bar
            if opts["no_progress"] or opts["verbosity"] == 0:
                return
            if bar is None:
                from tqdm import tqdm

                # the raw stream: OutputWrapper would end every redraw with a newline
                bar = tqdm(
                    total=total, unit="row", desc="export", file=self.stderr._out
                )
            bar.set_description(stage)
            bar.update(done - bar.n)

        try:
            report = dataset_export(
                study=study,
                out=opts["out"],
                options=options,
                overwrite=opts["overwrite"],
                on_progress=progress,
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        finally:
            if bar is not None:
                bar.close()
        summary = {k: v for k, v in report.items() if k != "files"}
        summary["files"] = len(report["files"])
        self.stdout.write(json.dumps(summary, indent=2))
