"""generate_images: queue generation jobs for a study's prompts."""

import json
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.studies.models import Study
from core.exceptions import PalateError
from generation import services
from generation.backends import BACKENDS
from generation.models import GenerationItem, ItemStatus, Prompt


class Command(BaseCommand):
    help = (
        "Queue one generation job per prompt of a study (K seeds each) for the "
        "Celery workers. --wait shows a progress bar until the jobs finish; "
        "--inline runs them in this process instead (no worker needed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--study", required=True, help="Study slug or id.")
        parser.add_argument(
            "--backend", required=True, help=f"One of: {', '.join(sorted(BACKENDS))}."
        )
        parser.add_argument(
            "--per-prompt",
            type=int,
            default=1,
            help="Seeds (images) per prompt (default 1).",
        )
        parser.add_argument(
            "--model", default="", help="Model name (default: the backend's default)."
        )
        parser.add_argument(
            "--params",
            default="{}",
            help="Backend parameters as JSON, e.g. '{\"steps\": 4}'.",
        )
        parser.add_argument("--domain", default="", help="Only prompts of this domain.")
        parser.add_argument(
            "--prompt",
            action="append",
            default=[],
            help="Add this prompt to the study first (repeatable).",
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--wait",
            action="store_true",
            help="Show progress until every job has finished.",
        )
        mode.add_argument(
            "--inline",
            action="store_true",
            help="Generate here, through the worker's code path.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=0,
            help="With --wait: give up after this many seconds.",
        )

    def handle(self, *args, **opts):
        study = self._study(opts["study"])
        try:
            params = json.loads(opts["params"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params is not valid JSON: {exc.msg}.") from None
        try:
            jobs = self._jobs_create(study, opts, params)
        except PalateError as exc:
            raise CommandError(exc.message) from None
        total = sum(j.n_seeds for j in jobs)
        self.stdout.write(
            f"Queued {len(jobs)} jobs ({total} images) with {jobs[0].backend}/"
            f"{jobs[0].model_name} for study '{study.slug}'."
        )
        if opts["inline"]:
            with tqdm(total=total, unit="img", desc="generating") as bar:
                for job in jobs:
                    job = services.job_run_inline(job=job)
                    bar.update(job.n_seeds)
        elif opts["wait"]:
            self._wait(jobs, total, opts["timeout"])
        self._report(study, jobs, opts)

    def _jobs_create(self, study: Study, opts: dict, params: dict) -> list:
        # Check the job before adding any prompt: bad input writes nothing.
        services.job_validate(
            backend=opts["backend"],
            model=opts["model"],
            n_seeds=opts["per_prompt"],
            params=params,
        )
        for text in opts["prompt"]:
            services.prompt_create(study=study, text=text, domain=opts["domain"])
        prompts = Prompt.objects.filter(study=study).order_by("pk")
        if opts["domain"]:
            prompts = prompts.filter(domain=opts["domain"].strip().lower())
        if not prompts.exists():
            raise CommandError(
                f"Study '{study.slug}' has no prompts"
                + (f" in domain '{opts['domain']}'" if opts["domain"] else "")
                + ": add some in the web UI (/generation/) or with --prompt."
            )
        return services.jobs_create(
            prompts=list(prompts),
            backend=opts["backend"],
            model=opts["model"],
            n_seeds=opts["per_prompt"],
            params=params,
            enqueue=not opts["inline"],
        )

    def _report(self, study: Study, jobs: list, opts: dict) -> None:
        ids = [j.pk for j in jobs]
        items = GenerationItem.objects.filter(job_id__in=ids)
        done = items.filter(status=ItemStatus.DONE).count()
        failed = items.filter(status=ItemStatus.FAILED).count()
        if opts["inline"] or opts["wait"]:
            self.stdout.write(
                self.style.SUCCESS(
                    f"{done} images made, {failed} failed. Jobs: {ids[0]}…{ids[-1]}."
                )
            )
            for error in items.filter(status=ItemStatus.FAILED).values_list(
                "error", flat=True
            )[:5]:
                self.stdout.write(self.style.WARNING(f"  failed: {error}"))
        else:
            self.stdout.write(
                f"Jobs {ids[0]}…{ids[-1]}. Follow them at /generation/studies/"
                f"{study.pk}/ or run workers: celery -A config worker"
                + (" -Q gpu" if opts["backend"] == "diffusers" else "")
            )

    def _study(self, key: str) -> Study:
        study = Study.objects.filter(slug=key).first()
        if study is None and key.isdigit():
            study = Study.objects.filter(pk=int(key)).first()
        if study is None:
            raise CommandError(f"No study with slug or id '{key}'.")
        return study

    def _wait(self, jobs, total: int, timeout: float) -> None:
        ids = [j.pk for j in jobs]
        started = time.monotonic()
        finished_states = [ItemStatus.DONE, ItemStatus.FAILED, ItemStatus.CANCELLED]
        with tqdm(total=total, unit="img", desc="generating") as bar:
            while True:
                n = GenerationItem.objects.filter(
                    job_id__in=ids, status__in=finished_states
                ).count()
                bar.update(n - bar.n)
                if n >= total:
                    return
                if timeout and time.monotonic() - started > timeout:
                    raise CommandError(
                        f"Still {total - n} images to go after {timeout:.0f}s "
                        "(are workers running? celery -A config worker)."
                    )
                time.sleep(0.5)
