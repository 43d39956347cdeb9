"""Writes for prompt steering: create an optimisation, run it, record it.

``optimization_run`` is what the Celery task and the command call. It renders
candidates through generation's own worker path (``jobs_create`` + ``item_run``
via ``job_run_inline``) into a closed companion study, ``<slug>-steering``, so
candidate images get provenance and an embedding like any image but are never
dealt to the crowd. The same prompt and seed are generated once: a later run
reuses the image (and pays nothing for it). Each round is written in its own
transaction as soon as it is scored, so a page polling the run sees it arrive.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotation.studies.models import Annotator, Study
from core.exceptions import Conflict, InvalidInput
from core.jobs import (
    Heartbeat,
    StillRunning,
    dead_worker_reason,
    stale_after,
    takeover_wait,
)

from . import costs, search
from .models import (
    DEFAULT_CAUTION,
    MAX_CAUTION,
    MAX_IMAGES_PER_PROMPT,
    MAX_PER_ROUND,
    MAX_ROUNDS,
    Candidate,
    Optimization,
    OptimizationRound,
)
from .proposers import PROPOSERS, ProposerError, proposer_get
from .scoring import RewardModelScorer, version_for

logger = logging.getLogger(__name__)

PROMPT_MAX_CHARS = 2000


def max_images_limit() -> int:
    return int(getattr(settings, "STEERING_MAX_IMAGES", 500))


def _study_for(annotator: Annotator, study: Study | None) -> Study:
    if annotator.erased_at is not None:
        raise InvalidInput(f"Annotator {annotator} was erased.")
    studies = list(
        Study.objects.filter(participations__annotator=annotator).order_by("pk")
    )
    if study is not None:
        if study.pk not in {s.pk for s in studies}:
            raise InvalidInput(f"Annotator {annotator} does not take part in {study}.")
        return study
    if not studies:
        raise InvalidInput(f"Annotator {annotator} takes part in no study.")
    if len(studies) > 1:
        raise InvalidInput(
            f"Annotator {annotator} takes part in {len(studies)} studies: say which."
        )
    return studies[0]


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number.")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}.")
    return value


def _check_caution(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput("Caution must be a number.")
    value = float(value)
    if not 0.0 <= value <= MAX_CAUTION:  # also refuses NaN
        raise InvalidInput(f"Caution must be between 0 and {MAX_CAUTION:g}.")
    return value


def _clean_prompt(text) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("The base prompt cannot be empty.")
    text = " ".join(text.split())
    if len(text) > PROMPT_MAX_CHARS:
        raise InvalidInput(
            f"The base prompt has at most {PROMPT_MAX_CHARS} characters."
        )
    return text


def _check_proposer(proposer: str) -> None:
    """A known proposer; the LLM one only when its endpoint is configured."""
    if proposer not in PROPOSERS:
        raise InvalidInput(
            f"Unknown proposer '{proposer}' (available: {', '.join(PROPOSERS)})."
        )
    if proposer == "llm":
        from .llm import ChatConfig, LLMError

        try:
            ChatConfig.from_settings()
        except LLMError as exc:
            raise InvalidInput(exc.message) from None


def optimization_create(
    *,
    annotator: Annotator,
    base_prompt: str,
    study: Study | None = None,
    rounds: int = 3,
    per_round: int = 10,
    proposer: str = "beam",
    backend: str = "procedural",
    model: str = "",
    max_images: int = 31,
    images_per_prompt: int = 1,
    seed: int = 0,
    caution: float = DEFAULT_CAUTION,
    created_by=None,
    enqueue: bool = True,
) -> Optimization:
    """Validate everything, then store a queued optimisation (and queue its task
    after commit). Bad input raises InvalidInput and writes nothing."""
    from generation.services import job_validate

    base_prompt = _clean_prompt(base_prompt)
    study = _study_for(annotator, study)
    rounds = _check_int("Rounds", rounds, 1, MAX_ROUNDS)
    per_round = _check_int("Variants per round", per_round, 1, MAX_PER_ROUND)
    images_per_prompt = _check_int(
        "Images per prompt", images_per_prompt, 1, MAX_IMAGES_PER_PROMPT
    )
    max_images = _check_int(
        "Maximum images", max_images, images_per_prompt, max_images_limit()
    )
    caution = _check_caution(caution)
    _check_proposer(proposer)
    backend, model, _ = job_validate(
        backend=backend, model=model, n_seeds=images_per_prompt, params=None
    )
    version = version_for(study=study)  # Conflict when there is no model yet
    opt = Optimization.objects.create(
        study=study,
        annotator=annotator,
        base_prompt=base_prompt,
        proposer=proposer,
        backend=backend,
        model_name=model,
        rounds=rounds,
        per_round=per_round,
        images_per_prompt=images_per_prompt,
        max_images=max_images,
        seed=seed,
        caution=caution,
        model_version_id=version.pk,
        cost_estimate=costs.estimate(backend=backend, max_images=max_images)["cost"],
        cost_unit=costs.cost_unit(),
        created_by=created_by,
    )
    if enqueue:
        transaction.on_commit(lambda: optimization_enqueue(optimization=opt))
    return opt


def optimization_enqueue(*, optimization: Optimization) -> None:
    """Send the run to a worker on the backend's queue (diffusers: ``gpu``)."""
    from generation.backends import backend_get

    from .tasks import optimize

    queue = backend_get(optimization.backend).queue
    optimize.apply_async(args=[optimization.pk], queue=queue)


def _claim(optimization_id: int) -> Optimization | None:
    """Queued → running. A redelivered task that finds the run "running" waits
    (StillRunning) while its worker's heartbeat is fresh; once the stamp stopped
    (the worker died) the run is failed with the reason, by compare-and-set on
    the stamp: a search is not resumed halfway, its rounds so far stay on record.
    None when there is nothing to run."""
    row = (
        Optimization.objects.filter(pk=optimization_id)
        .values("status", "heartbeat_at")
        .first()
    )
    if row is None:
        return None
    if row["status"] == Optimization.Status.RUNNING:
        wait = takeover_wait(row["heartbeat_at"])
        if wait > 0:
            raise StillRunning(wait + 1)
        Optimization.objects.filter(
            pk=optimization_id,
            status=Optimization.Status.RUNNING,
            heartbeat_at=row["heartbeat_at"],
        ).update(
            status=Optimization.Status.FAILED,
            error=dead_worker_reason(),
            finished_at=timezone.now(),
        )
        return None
    now = timezone.now()
    if not Optimization.objects.filter(
        pk=optimization_id, status=Optimization.Status.QUEUED
    ).update(status=Optimization.Status.RUNNING, started_at=now, heartbeat_at=now):
        return None  # finished, or another delivery is running it
    return Optimization.objects.get(pk=optimization_id)


def optimizations_fail_stale(*, now=None) -> int:
    """Fail runs whose worker died (no heartbeat for ``stale_after()``); the beat
    task ``steering.sweep_stale_optimizations`` calls this every 30 s."""
    now = now or timezone.now()
    stale = Q(heartbeat_at__lt=now - stale_after()) | Q(heartbeat_at__isnull=True)
    return Optimization.objects.filter(
        stale, status=Optimization.Status.RUNNING
    ).update(
        status=Optimization.Status.FAILED,
        error=dead_worker_reason(),
        finished_at=now,
    )


def _finish(opt: Optimization, *, status: str, stopped: str = "", error: str = ""):
    opt.status = status
    opt.stopped = stopped[:500]
    opt.error = error[:4000]
    opt.finished_at = timezone.now()
    opt.save(update_fields=["status", "stopped", "error", "finished_at"])


def optimization_run(*, optimization_id: int, scorer=None) -> str:
    """Run a queued optimisation to the end. Idempotent: anything not queued is
    left alone. ``scorer`` (tests, benchmarks) replaces the reward model scorer.
    Returns the final status (or "skipped")."""
    opt = _claim(optimization_id)
    if opt is None:
        return "skipped"
    mine = Optimization.objects.filter(
        pk=opt.pk, status=Optimization.Status.RUNNING, started_at=opt.started_at
    )
    with Heartbeat(lambda: mine.update(heartbeat_at=timezone.now())):
        return _search(opt, scorer)


def _search(opt: Optimization, scorer) -> str:
    try:
        scorer = scorer or RewardModelScorer(annotator=opt.annotator, study=opt.study)
        version = getattr(scorer, "version", None)
        opt.model_version_id = getattr(version, "pk", opt.model_version_id)
        opt.model_version_label = getattr(scorer, "label", "")[:200]
        opt.save(update_fields=["model_version_id", "model_version_label"])
        renderer = _Renderer(opt)
        result = search.search(
            base_prompt=opt.base_prompt,
            proposer=proposer_get(opt.proposer),
            evaluate=lambda prompts, r: _evaluate(opt, renderer, scorer, prompts),
            rounds=opt.rounds,
            per_round=opt.per_round,
            max_images=opt.max_images,
            images_per_prompt=opt.images_per_prompt,
            seed=opt.seed,
            caution=opt.caution,
            on_round=lambda rnd: _record_round(opt, rnd),
        )
    except (ProposerError, InvalidInput, Conflict) as exc:
        _finish(opt, status=Optimization.Status.FAILED, error=str(exc))
        return opt.status
    except Exception as exc:
        logger.exception("optimisation %s crashed", opt.pk)
        _finish(
            opt,
            status=Optimization.Status.FAILED,
            error=f"Unexpected error: {type(exc).__name__}: {exc}",
        )
        return opt.status
    _finish(opt, status=Optimization.Status.DONE, stopped=_stopped_text(result))
    return opt.status


def _stopped_text(result: search.Result) -> str:
    return {
        "rounds": "all rounds done",
        "budget": "image budget spent",
        "exhausted": "no untried variant left",
    }.get(result.stopped, result.stopped)


def steering_study(study: Study) -> Study:
    """The closed companion study that holds a study's candidate images."""
    slug = f"{study.slug}-steering"[:80]
    companion, _ = Study.objects.get_or_create(
        slug=slug,
        defaults={
            "name": f"{study.name} (steering candidates)"[:200],
            "description": "Images generated while optimising prompts; never rated.",
            "status": Study.Status.CLOSED,
            "raters_per_image": 1,
            "scale_min": study.scale_min,
            "scale_max": study.scale_max,
        },
    )
    return companion


class _Renderer:
    """Images for (prompt, seed) through generation's worker path, reused when
    the same prompt, backend, model and seed were generated before."""

    def __init__(self, opt: Optimization):
        self.opt = opt
        self.study = steering_study(opt.study)
        self.per_image = costs.cost_per_image(opt.backend)

    def _existing(self, prompt, seed: int) -> int | None:
        from generation.models import GenerationItem, ItemStatus

        return (
            GenerationItem.objects.filter(
                job__prompt=prompt,
                job__backend=self.opt.backend,
                job__model_name=self.opt.model_name,
                seed=seed,
                status=ItemStatus.DONE,
                image__isnull=False,
            )
            .values_list("image_id", flat=True)
            .first()
        )

    def render(self, prompts: list[str]) -> dict[str, tuple]:
        """prompt → (image ids, cost, generation ms, error)."""
        from generation import services as gen

        seeds = range(self.opt.images_per_prompt)
        rows = {p: gen.prompt_create(study=self.study, text=p) for p in prompts}
        images: dict[str, dict[int, int]] = defaultdict(dict)
        missing: dict[int, list] = defaultdict(list)
        for text, row in rows.items():
            for s in seeds:
                found = self._existing(row, s)
                if found:
                    images[text][s] = found
                else:
                    missing[s].append(row)
        out_cost: dict[str, float] = defaultdict(float)
        out_ms: dict[str, int] = defaultdict(int)
        errors: dict[str, str] = {}
        for s, todo in missing.items():
            jobs = gen.jobs_create(
                prompts=todo,
                backend=self.opt.backend,
                model=self.opt.model_name,
                n_seeds=1,
                seed_start=s,
                enqueue=False,
            )
            for job in jobs:
                t0 = time.perf_counter()
                job = gen.job_run_inline(job=job)
                item = job.items.get()
                text = job.prompt.text
                out_ms[text] += int((time.perf_counter() - t0) * 1000)
                if item.image_id:
                    images[text][s] = item.image_id
                    out_cost[text] += self.per_image
                else:
                    errors[text] = item.error or f"generation {item.status}"
        return {
            p: (
                [images[p][s] for s in seeds if s in images[p]],
                out_cost[p],
                out_ms[p],
                errors.get(p, ""),
            )
            for p in prompts
        }


def _evaluate(opt, renderer: _Renderer, scorer, prompts: list[str]) -> list:
    rendered = renderer.render(prompts)
    ids = [i for p in prompts for i in rendered[p][0]]
    scores = scorer.score(ids) if ids else None
    per = dict(zip(ids, range(len(ids)), strict=True))
    out: list = []
    for p in prompts:
        img_ids, cost, gen_ms, error = rendered[p]
        if not img_ids:
            out.append(f"generation failed: {error}"[:500])
            continue
        pers = [scores.personal[per[i]] for i in img_ids]
        pops = [scores.population[per[i]] for i in img_ids]
        sds = [scores.spread[per[i]] if scores.spread else 0.0 for i in img_ids]
        out.append(
            search.Outcome(
                personal=sum(pers) / len(pers),
                population=sum(pops) / len(pops),
                spread=sum(sds) / len(sds),
                images=img_ids,
                image_personal=pers,
                image_population=pops,
                image_spread=sds,
                cost=cost,
                generation_ms=gen_ms,
                scoring_ms=int(scores.ms * len(img_ids) / len(ids)),
            )
        )
    return out


def _record_round(opt: Optimization, rnd: search.Round) -> None:
    with transaction.atomic():
        best = rnd.best.outcome
        n_images = sum(len(c.outcome.images) for c in rnd.candidates if c.outcome)
        row = OptimizationRound.objects.create(
            optimization=opt,
            index=rnd.index,
            best_prompt=rnd.best.prompt,
            best_personal=best.personal,
            best_population=best.population,
            best_spread=best.spread,
            improved=rnd.improved,
            n_images=n_images,
            duration_ms=rnd.duration_ms,
        )
        spent = 0.0
        for c in rnd.candidates:
            o = c.outcome
            spent += o.cost if o else 0.0
            Candidate.objects.create(
                optimization=opt,
                round=row,
                prompt=c.prompt,
                note=c.note[:500],
                rejected=c.rejected[:500],
                image_id=o.best_image(opt.caution) if o else None,
                image_ids=o.images if o else [],
                personal=o.personal if o else None,
                population=o.population if o else None,
                image_personal=o.image_personal if o else [],
                image_population=o.image_population if o else [],
                spread=o.spread if o else None,
                image_spread=o.image_spread if o else [],
                generation_ms=o.generation_ms if o else 0,
                scoring_ms=o.scoring_ms if o else 0,
                cost=o.cost if o else 0.0,
            )
        opt.images_used += n_images
        opt.cost_spent += spent
        opt.save(update_fields=["images_used", "cost_spent"])
