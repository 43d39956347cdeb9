"""``train_reward_model [--study S] [--promote auto/always/never]``: one training
run in this process, with a progress bar, then its metrics."""

import json

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Study
from core.exceptions import PalateError
from rewardmodel import services
from rewardmodel.models import TrainingRun


class Command(BaseCommand):
    help = "Train the personalized reward model once and print its metrics."

    def add_arguments(self, parser):
        parser.add_argument("--study", help="study slug or id (default: all studies)")
        parser.add_argument(
            "--promote", choices=["auto", "always", "never"], default="auto"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--steps", type=int, help="optimizer steps")
        parser.add_argument(
            "--backbone",
            help="e.g. open_clip:ViT-L-14:<tag> or pixelstats:v2 (default: settings)",
        )

    def handle(self, *args, **opts):
        from tqdm import tqdm

        study = None
        if opts["study"]:
            s = opts["study"]
            study = Study.objects.filter(
                **({"pk": int(s)} if s.isdigit() else {"slug": s})
            ).first()
            if study is None:
                raise CommandError(f"No study '{s}'.")
        config = {"seed": opts["seed"]}
        if opts["steps"]:
            config["steps"] = opts["steps"]
        if opts["backbone"]:
            config["backbone"] = opts["backbone"]
        try:
            run = services.training_run_create(
                study=study,
                trigger=TrainingRun.Trigger.COMMAND,
                promote=opts["promote"],
                config=config,
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        bar = tqdm(total=100, unit="%", desc="starting", file=self.stderr._out)

        def on_progress(stage, fraction, info):
            bar.set_description(stage)
            bar.n = round(fraction * 100)
            if info:
                bar.set_postfix(
                    {
                        k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in info.items()
                    }
                )
            bar.refresh()

        try:
            run = services.training_run_execute(run_id=run.pk, on_progress=on_progress)
        except PalateError as exc:
            raise CommandError(exc.message) from None
        finally:
            bar.close()
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"Training run #{run.pk} {run.status}: {run.error}")
        version = run.version
        m = version.metrics
        self.stdout.write(
            f"Training run #{run.pk} succeeded → v{version.pk} "
            f"({version.duration_s:.1f}s), backbone {version.backbone}"
        )
        if not version.weights_loaded:
            self.stdout.write(
                self.style.WARNING(f"WARNING: {version.backbone_warning}")
            )
        self.stdout.write(f"data: {json.dumps(version.data_counts)}")
        self.stdout.write(_table(m))
        self.stdout.write(
            f"v{version.pk} {'is ACTIVE' if version.is_active else 'not promoted'}: "
            f"{version.promotion_reason or '-'}"
        )


def _fmt(v) -> str:
    return "   -  " if v is None else f"{v:6.3f}"


def _table(m: dict) -> str:
    who = ["model", "population", "annotator_mean", "loo_consensus"]
    lines = [
        "mean per-annotator pairwise accuracy (n annotators)",
        f"{'split':<12}" + "".join(f"{w:>16}" for w in who),
    ]
    blocks = [("seen", m["seen"])] + list(m.get("unseen", {}).items())
    for name, block in blocks:
        label = name if name == "seen" else f"unseen {name}"
        lines.append(
            f"{label:<12}"
            + "".join(f"{_fmt(block[w]['pairwise_accuracy']):>16}" for w in who)
            + f"   (n={block['n_annotators']})"
        )
    return "\n".join(lines)
