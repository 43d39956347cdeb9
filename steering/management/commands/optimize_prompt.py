"""optimize_prompt: steer one base prompt toward one annotator's taste."""

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from annotation.studies.models import Annotator, Study
from core.exceptions import PalateError
from generation.backends import BACKENDS
from steering import costs, selectors, services
from steering.models import DEFAULT_CAUTION
from steering.proposers import PROPOSERS


def _one(model, key: str, *fields: str):
    q = Q()
    for f in fields:
        q |= Q(**{f: key})
    if key.isdigit():
        q |= Q(pk=int(key))
    try:
        return model.objects.get(q)
    except model.DoesNotExist:
        raise CommandError(f"No {model._meta.verbose_name} '{key}'.") from None


class Command(BaseCommand):
    help = (
        "Optimise a prompt for one annotator: R rounds of proposing variants, "
        "generating images and scoring them with the study's active personalised "
        "model; keeps the best and records the whole trajectory. Runs here through "
        "the worker's code path, or --queue for a Celery worker."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--annotator", required=True, help="Annotator id or public id."
        )
        parser.add_argument("--prompt", required=True, help="The base prompt.")
        parser.add_argument(
            "--study", default="", help="Study slug or id (if they are in several)."
        )
        # Defaults: few wide rounds (docs/steering.md, "Search settings").
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--per-round", type=int, default=10)
        parser.add_argument("--proposer", default="beam", choices=sorted(PROPOSERS))
        parser.add_argument("--backend", default="procedural", choices=sorted(BACKENDS))
        parser.add_argument("--model", default="")
        parser.add_argument(
            "--max-images", type=int, default=31, help="Image budget (base included)."
        )
        parser.add_argument("--images-per-prompt", type=int, default=1)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--caution",
            type=float,
            default=DEFAULT_CAUTION,
            help="Rank candidates by personal score − caution × its posterior sd "
            "(0: personal score alone).",
        )
        parser.add_argument(
            "--queue", action="store_true", help="Queue for a worker and return."
        )

    def handle(self, *args, **o):
        annotator = _one(Annotator, o["annotator"], "public_id")
        study = _one(Study, o["study"], "slug") if o["study"] else None
        est = costs.estimate(backend=o["backend"], max_images=o["max_images"])
        self.stdout.write(
            f"Estimated cost: at most {est['cost']:g} {est['unit']} for "
            f"{o['max_images']} images on {o['backend']}"
            + (f", about {est['seconds']:g} s" if est["seconds"] is not None else "")
        )
        try:
            opt = services.optimization_create(
                annotator=annotator,
                base_prompt=o["prompt"],
                study=study,
                rounds=o["rounds"],
                per_round=o["per_round"],
                proposer=o["proposer"],
                backend=o["backend"],
                model=o["model"],
                max_images=o["max_images"],
                images_per_prompt=o["images_per_prompt"],
                seed=o["seed"],
                caution=o["caution"],
                enqueue=o["queue"],
            )
        except PalateError as exc:
            raise CommandError(exc.message) from None
        if o["queue"]:
            self.stdout.write(f"Queued optimisation {opt.pk}.")
            return
        services.optimization_run(optimization_id=opt.pk)
        opt.refresh_from_db()
        for rnd in selectors.optimization_rounds(opt):
            mark = "*" if rnd.improved else " "
            self.stdout.write(
                f"round {rnd.index:>2} {mark} personal {rnd.best_personal:6.3f} "
                f"± {rnd.best_spread:5.3f}  population {rnd.best_population:6.3f}  "
                f"{rnd.best_prompt}"
            )
        if opt.status != opt.Status.DONE:
            raise CommandError(f"Optimisation {opt.pk} failed: {opt.error}")
        base, best = selectors.optimization_best(opt)
        self.stdout.write(
            self.style.SUCCESS(
                f"Optimisation {opt.pk} done ({opt.stopped}): personal "
                f"{base.personal:.3f} -> {best.personal:.3f}, population "
                f"{base.population:.3f} -> {best.population:.3f}; "
                f"{opt.images_used} images, {opt.cost_spent:g} {opt.cost_unit}.\n"
                f"Best prompt: {best.prompt}"
            )
        )
