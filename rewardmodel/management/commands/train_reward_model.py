"""``train_reward_model [--study S] [--promote auto/always/never]``: one training
run in this process, with a progress bar, then its test metrics."""

import json

from django.core.management.base import BaseCommand, CommandError

from annotation.studies.models import Study
from core.exceptions import PalateError
from rewardmodel import services
from rewardmodel.models import TrainingRun
from rewardmodel.report import metrics_table


def study_find(value: str) -> Study:
    study = Study.objects.filter(
        **({"pk": int(value)} if value.isdigit() else {"slug": value})
    ).first()
    if study is None:
        raise CommandError(f"No study '{value}'.")
    return study


def run_with_progress(run: TrainingRun, stderr) -> TrainingRun:
    """Execute a queued run here, with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", desc="starting", file=stderr._out)

    def on_progress(stage, fraction, info):
        bar.set_description(stage)
        bar.n = round(fraction * 100)
        bar.refresh()

    try:
        return services.training_run_execute(run_id=run.pk, on_progress=on_progress)
    except PalateError as exc:
        raise CommandError(exc.message) from None
    finally:
        bar.close()


def version_print(command: BaseCommand, run: TrainingRun) -> None:
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise CommandError(f"Training run #{run.pk} {run.status}: {run.error}")
    version = run.version
    command.stdout.write(
        f"Training run #{run.pk} succeeded → v{version.pk} "
        f"({version.duration_s:.1f}s), backbone {version.backbone}"
    )
    if not version.weights_loaded:
        command.stdout.write(
            command.style.WARNING(f"WARNING: {version.backbone_warning}")
        )
    command.stdout.write(f"data: {json.dumps(version.data_counts)}")
    command.stdout.write(metrics_table(version.metrics))
    command.stdout.write(
        f"v{version.pk} {'is ACTIVE' if version.is_active else 'not promoted'}: "
        f"{version.promotion_reason or '-'}"
    )


class Command(BaseCommand):
    help = "Train the personalised reward model once and print its test metrics."

    def add_arguments(self, parser):
        parser.add_argument("--study", help="study slug or id (default: all studies)")
        parser.add_argument(
            "--promote", choices=["auto", "always", "never"], default="auto"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--ks",
            help="k values of the few-shot curve, e.g. 0,5,10,20 (default)",
        )
        parser.add_argument(
            "--backbone",
            help="e.g. open_clip:ViT-B-32:laion2b_s34b_b79k (default: settings)",
        )

    def handle(self, *args, **opts):
        study = study_find(opts["study"]) if opts["study"] else None
        config = {"seed": opts["seed"]}
        if opts["backbone"]:
            config["backbone"] = opts["backbone"]
        if opts["ks"]:
            try:
                config["ks"] = [int(k) for k in opts["ks"].split(",")]
            except ValueError:
                raise CommandError("--ks: whole numbers separated by commas.") from None
        try:
            run = services.training_run_create(
                study=study,
                trigger=TrainingRun.Trigger.COMMAND,
                promote=opts["promote"],
                config=config,
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        version_print(self, run_with_progress(run, self.stderr))
