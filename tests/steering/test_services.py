"""optimize_prompt end to end: procedural backend through generation's worker
path, scored by a real trained reward model, trajectory recorded."""

import pytest
from django.core.management import CommandError, call_command

from annotation import services as ann
from annotation.models import Image, Study
from core.exceptions import Conflict, InvalidInput
from generation.models import GenerationItem
from rewardmodel import inference
from steering import costs, selectors, services, tasks
from steering.models import Candidate, Optimization

pytestmark = pytest.mark.django_db


def _run(annotator, **kw):
    opt = services.optimization_create(
        annotator=annotator,
        base_prompt=kw.pop("prompt", "a fox in a forest"),
        enqueue=False,
        **kw,
    )
    assert services.optimization_run(optimization_id=opt.pk) == "done"
    opt.refresh_from_db()
    return opt


def test_trajectory_is_recorded_and_best_never_decreases(steering_setup):
    study, annotators = steering_setup
    who = annotators[2]
    opt = _run(who, rounds=3, per_round=3, max_images=10, proposer="beam")
    assert opt.status == "done" and opt.finished_at and opt.started_at
    rounds = selectors.optimization_rounds(opt)
    assert [r.index for r in rounds] == list(range(len(rounds)))
    assert len(rounds) == 4 and opt.stopped == "all rounds done"
    # The kept best is ranked by personal − caution × spread (default caution 1).
    assert opt.caution == 1.0
    bests = [r.best_personal - opt.caution * r.best_spread for r in rounds]
    assert bests == sorted(bests)
    scored = list(opt.candidates.exclude(personal=None))
    assert len(scored) == opt.images_used == 10
    assert bests[-1] == pytest.approx(max(c.score for c in scored))
    # Scores are the active model's predictions for that very image.
    ids = [c.image_id for c in scored]
    predicted = inference.predict(annotator=who, image_ids=ids, spread=True)
    for c in scored:
        assert c.personal == pytest.approx(predicted["scores"][c.image_id], abs=1e-5)
        assert c.spread == pytest.approx(predicted["spread"][c.image_id], abs=1e-5)
        assert c.population is not None
        assert c.image_ids == [c.image_id]
    assert opt.model_version_id and "version" in opt.model_version_label
    assert sum(c.generation_ms for c in scored) > 0
    assert opt.cost_spent == 0.0  # procedural costs nothing
    # Candidate images live in a closed companion study, never dealt to raters.
    images = Image.objects.filter(pk__in=ids)
    assert {i.study.slug for i in images} == {f"{study.slug}-steering"}
    assert Study.objects.get(slug=f"{study.slug}-steering").status == "closed"
    assert all(i.provenance["backend"] == "procedural" for i in images)
    base, best = selectors.optimization_best(opt)
    assert base.round.index == 0 and base.prompt == "a fox in a forest"
    assert best.score == pytest.approx(bests[-1])


def test_second_run_reuses_images(steering_setup):
    study, annotators = steering_setup
    _run(annotators[0], rounds=2, per_round=2, max_images=5)
    n_items = GenerationItem.objects.count()
    again = _run(annotators[0], rounds=2, per_round=2, max_images=5)
    assert GenerationItem.objects.count() == n_items
    assert again.candidates.exclude(personal=None).count() == 5


def test_command(steering_setup, capsys):
    study, annotators = steering_setup
    call_command(
        "optimize_prompt",
        "--annotator",
        annotators[1].public_id,
        "--prompt",
        "a sailing boat",
        "--rounds",
        "2",
        "--per-round",
        "2",
        "--max-images",
        "5",
    )
    out = capsys.readouterr().out
    assert "Estimated cost: at most 0 USD for 5 images on procedural" in out
    assert "round  0" in out and "round  2" in out
    assert "Best prompt: a sailing boat" in out
    opt = Optimization.objects.get()
    assert opt.status == "done" and opt.images_used == 5


def test_task_runs_once(steering_setup):
    study, annotators = steering_setup
    opt = services.optimization_create(
        annotator=annotators[0],
        base_prompt="a bowl of fruit",
        rounds=1,
        per_round=2,
        max_images=3,
        enqueue=False,
    )
    assert tasks.optimize(opt.pk) == "done"
    n = Candidate.objects.count()
    assert tasks.optimize(opt.pk) == "skipped"  # a redelivered task changes nothing
    assert Candidate.objects.count() == n


BAD_INPUT = [
    ({"base_prompt": "  "}, "cannot be empty"),
    ({"rounds": 0}, "Rounds must be between 1 and 50"),
    ({"max_images": 100_000}, "Maximum images must be between 1 and 500"),
    ({"proposer": "magic"}, "Unknown proposer 'magic'"),
    ({"backend": "nope"}, "Unknown backend 'nope'"),
    ({"proposer": "llm"}, "set STEERING_LLM_URL"),
    ({"caution": -0.5}, "Caution must be between 0 and 5"),
    ({"caution": float("nan")}, "Caution must be between 0 and 5"),
    ({"caution": "1"}, "Caution must be a number"),
]


def test_bad_input_writes_nothing(steering_setup, settings, monkeypatch):
    settings.STEERING_LLM_URL = ""
    monkeypatch.delenv("STEERING_LLM_URL", raising=False)
    study, annotators = steering_setup
    for kwargs, message in BAD_INPUT:
        args = {"annotator": annotators[0], "base_prompt": "a cat", **kwargs}
        with pytest.raises(InvalidInput, match=message):
            services.optimization_create(enqueue=False, **args)
    assert not Optimization.objects.exists()
    stranger = ann.annotator_create()
    with pytest.raises(InvalidInput, match="takes part in no study"):
        services.optimization_create(annotator=stranger, base_prompt="a cat")
    with pytest.raises(CommandError, match="No annotator 'a-missing'"):
        call_command("optimize_prompt", "--annotator", "a-missing", "--prompt", "x")


def test_no_model_yet(db, annotator, study):
    ann.participation_get_or_create(annotator=annotator, study=study)
    with pytest.raises(Conflict, match="No active reward model"):
        services.optimization_create(annotator=annotator, base_prompt="a cat")


def test_cost_estimate(db, settings):
    settings.GENERATION_COST_PER_IMAGE = {"flux": 0.05}
    est = costs.estimate(backend="flux", max_images=20)
    assert est["cost"] == pytest.approx(1.0) and est["unit"] == "USD"
    assert costs.estimate(backend="gemini", max_images=10)["cost"] == pytest.approx(
        0.39
    )
    assert costs.estimate(backend="procedural", max_images=10)["cost"] == 0.0


@pytest.mark.postgres
def test_caution_out_of_range_is_refused_by_the_database(steering_setup):
    from django.db import IntegrityError, transaction

    study, annotators = steering_setup
    opt = services.optimization_create(
        annotator=annotators[0], base_prompt="a cat", caution=0.0, enqueue=False
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Optimization.objects.filter(pk=opt.pk).update(caution=9.0)
    opt.refresh_from_db()
    assert opt.caution == 0.0


def test_an_llm_answer_with_nul_or_a_huge_prompt_ends_the_run_as_done(
    steering_setup, settings
):
    """NUL and control characters are cleaned out of the rewrites (they become
    Candidate rows); an answer holding only a 200 kB prompt is an LLM error, which
    ends the run as done with what was found, as the docs say."""
    import json

    from tests.steering.fake_openai import API_KEY, FakeOpenAI

    study, annotators = steering_setup
    answers = iter(
        [
            {"prompts": ["a fox\x00 in a forest, oil\x07 painting"]},
            {"prompts": ["a fox in a forest " * 12_000]},
        ]
    )
    fake = FakeOpenAI()
    fake.reply = lambda body: json.dumps(next(answers))
    with fake.running():
        settings.STEERING_LLM_URL = fake.base_url
        settings.STEERING_LLM_API_KEY = API_KEY
        settings.STEERING_LLM_MAX_RETRIES = 0
        opt = _run(annotators[0], proposer="llm", rounds=3, per_round=2)
    prompts = list(
        Candidate.objects.filter(optimization=opt).values_list("prompt", flat=True)
    )
    assert "a fox in a forest, oil painting" in prompts
    assert not any("\x00" in p or len(p) > 2000 for p in prompts)
    assert opt.stopped.startswith("LLM proposer: Malformed answer"), opt.stopped
