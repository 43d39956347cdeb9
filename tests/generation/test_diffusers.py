"""The diffusers backend against a tiny, randomly initialised StableDiffusionPipeline.

The pipeline is built by ``tiny_pipeline.py`` (no downloads), saved with
``save_pretrained`` and then loaded by the backend through the real
``from_pretrained(path, local_files_only=True)`` path, 2 steps at 32×32 on the CPU.
"""

import io
import os
import subprocess
import sys

import pytest
from PIL import Image as PILImage

from annotation.models import Image
from generation import services
from generation.backends import (
    ConfigurationError,
    GenerationRequest,
    PermanentError,
    TransientError,
    backend_get,
)
from generation.backends import diffusers as diffusers_backend

from .tiny_pipeline import build_tiny_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("diffusers")
    return str(build_tiny_pipeline(tmp_path_factory.mktemp("tiny")))


PARAMS = {"steps": 2, "width": 32, "height": 32}


def test_generates_deterministic_pngs_and_loads_the_pipeline_once(tiny_model):
    backend = backend_get("diffusers")
    backend.validate(model=tiny_model, params=PARAMS)

    def run(seeds, negative=""):
        return backend.generate(
            [
                GenerationRequest(
                    prompt="a red fox",
                    seed=s,
                    model=tiny_model,
                    params=PARAMS,
                    negative_prompt=negative,
                )
                for s in seeds
            ]
        )

    first = run([1, 2])
    assert len(first) == 2
    img = PILImage.open(io.BytesIO(first[0].data))
    assert img.format == "PNG" and img.size == (32, 32)
    assert first[0].data != first[1].data  # seeds differ
    loaded = [k for k in diffusers_backend.pipelines_loaded() if k[0] == tiny_model]
    pipe = diffusers_backend._PIPELINES[loaded[0]]
    again = run([1], negative="blurry")
    assert diffusers_backend._PIPELINES[loaded[0]] is pipe  # cached per process
    assert (
        len([k for k in diffusers_backend.pipelines_loaded() if k[0] == tiny_model])
        == 1
    )
    same = run([1])
    assert same[0].data == first[0].data  # same seed, same bytes
    assert again[0].data != first[0].data  # the negative prompt is used
    prov = first[0].provenance["diffusers"]
    assert prov["pipeline"] == "StableDiffusionPipeline"
    assert prov["device"] == "cpu" and prov["steps"] == 2 and prov["batch_size"] == 2


def test_unknown_local_model_fails_the_item_with_a_message(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    backend = backend_get("diffusers")
    with pytest.raises(PermanentError, match="Could not load diffusers model"):
        backend.generate(
            [GenerationRequest(prompt="x", seed=0, model=str(tmp_path), params=PARAMS)]
        )


@pytest.mark.django_db
def test_job_with_batches_fills_the_pool(study, tiny_model):
    prompt = services.prompt_create(study=study, text="a blue bird", domain="art")
    job = services.job_create(
        prompt=prompt,
        backend="diffusers",
        model=tiny_model,
        n_seeds=3,
        params={**PARAMS, "batch_size": 2},
        enqueue=False,
    )
    items = list(job.items.order_by("seed"))
    # The first delivery claims a batch of two; the second item's own task will
    # then find it finished.
    assert services.item_run(item_id=items[0].pk) == "done"
    items[1].refresh_from_db()
    assert items[1].status == "done"
    assert services.item_run(item_id=items[1].pk) == "skipped"
    job = services.job_run_inline(job=job)
    assert (job.status, job.n_done) == ("done", 3)
    images = Image.objects.filter(study=study)
    assert images.count() == 3
    image = images.first()
    assert image.provenance["backend"] == "diffusers"
    assert image.provenance["diffusers"]["steps"] == 2
    assert image.open_slots == study.raters_per_image


def test_diffusers_tasks_go_to_the_gpu_queue():
    from config.celery import app
    from generation.tasks import task_for_backend

    route = app.amqp.router.route({}, task_for_backend("diffusers").name)
    assert route["queue"].name == "gpu"
    route = app.amqp.router.route({}, task_for_backend("procedural").name)
    assert route["queue"].name == "default"


def test_web_process_does_not_import_torch():
    code = (
        "import sys, django; django.setup();"
        "import config.urls, generation.services, generation.tasks, generation.views;"
        "from generation.backends import backend_get;"
        "[backend_get(n) for n in ('procedural', 'diffusers', 'flux', 'gemini')];"
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.getcwd(),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _requests(model, seeds, params):
    return [
        GenerationRequest(prompt="a red fox", seed=s, model=model, params=params)
        for s in seeds
    ]


def _cached_pipe(model):
    [key] = [k for k in diffusers_backend.pipelines_loaded() if k[0] == model]
    return diffusers_backend._PIPELINES[key]


def test_seeds_drive_a_cpu_generator(tiny_model):
    [result] = backend_get("diffusers").generate(_requests(tiny_model, [7], PARAMS))
    assert result.provenance["diffusers"]["generator"] == "cpu"
    # The same noise as a CPU generator seeded by hand gives, on any device.
    import torch

    pipe = _cached_pipe(tiny_model)
    with torch.inference_mode():
        out = pipe(
            prompt=["a red fox"],
            generator=[torch.Generator(device="cpu").manual_seed(7)],
            num_inference_steps=2,
            width=32,
            height=32,
            output_type="pil",
        )
    buf = io.BytesIO()
    out.images[0].save(buf, format="PNG")
    assert buf.getvalue() == result.data


def test_per_model_defaults_apply_unless_the_job_sets_them(tiny_model, monkeypatch):
    assert diffusers_backend.MODEL_DEFAULTS["stabilityai/sd-turbo"] == {
        "steps": 1,
        "guidance_scale": 0.0,
        "width": 512,
        "height": 512,
    }
    monkeypatch.setitem(
        diffusers_backend.MODEL_DEFAULTS,
        tiny_model,
        {"steps": 1, "guidance_scale": 0.0, "width": 48, "height": 48},
    )
    backend = backend_get("diffusers")
    [default] = backend.generate(_requests(tiny_model, [1], {}))
    prov = default.provenance["diffusers"]
    assert (prov["steps"], prov["guidance_scale"]) == (1, 0.0)
    assert (prov["width"], prov["height"]) == (48, 48)
    [own] = backend.generate(_requests(tiny_model, [1], PARAMS))
    assert own.provenance["diffusers"]["steps"] == 2
    assert own.provenance["diffusers"]["width"] == 32


def test_offload_is_validated_and_recorded(tiny_model):
    backend = backend_get("diffusers")
    backend.validate(model=tiny_model, params={**PARAMS, "offload": "model"})
    with pytest.raises(ConfigurationError, match="offload must be one of"):
        backend.validate(model=tiny_model, params={"offload": "disk"})
    # On a CPU-only worker there is no card to offload to: loaded as is, said so.
    [result] = backend.generate(
        _requests(tiny_model, [1], {**PARAMS, "offload": "model"})
    )
    assert result.provenance["diffusers"]["offload"] == "none"
    assert (
        diffusers_backend.MODEL_DEFAULTS["black-forest-labs/FLUX.2-dev"]["offload"]
        == "model"
    )


def _oom(*args, **kwargs):
    import torch

    raise torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.19 GiB total)"
    )


@pytest.mark.django_db
def test_out_of_memory_inside_the_pipeline_call_is_retried(
    study, tiny_model, monkeypatch
):
    backend_get("diffusers").generate(_requests(tiny_model, [1], PARAMS))  # load
    monkeypatch.setattr(_cached_pipe(tiny_model).unet, "forward", _oom)
    prompt = services.prompt_create(study=study, text="a heron")
    item = services.job_create(
        prompt=prompt,
        backend="diffusers",
        model=tiny_model,
        params=PARAMS,
        enqueue=False,
    ).items.get()
    with pytest.raises(services.RetryLater):
        services.item_run(item_id=item.pk)
    item.refresh_from_db()
    assert (item.status, item.attempts) == ("queued", 1)
    assert "Out of memory generating 1 image(s): CUDA out of memory" in item.error
    assert "offload='model'" in item.error


def test_out_of_memory_at_load_is_treated_the_same(tiny_model, monkeypatch):
    from diffusers import DiffusionPipeline

    monkeypatch.setattr(DiffusionPipeline, "to", _oom)
    with pytest.raises(TransientError, match=r"Out of memory moving .* to cpu"):
        backend_get("diffusers").generate(
            _requests(tiny_model, [1], {**PARAMS, "dtype": "float16"})
        )


@pytest.mark.django_db
def test_a_safety_checker_hit_fails_that_image_only(study, tiny_model, monkeypatch):
    backend_get("diffusers").generate(_requests(tiny_model, [1], PARAMS))  # load
    pipe = _cached_pipe(tiny_model)

    def flag_second(image, device, dtype):
        # The hook StableDiffusionPipeline.__call__ asks; a real checker answers
        # one flag per image of the batch.
        return image, [i == 1 for i in range(len(image))]

    monkeypatch.setattr(pipe, "run_safety_checker", flag_second)
    prompt = services.prompt_create(study=study, text="a heron")
    job = services.job_create(
        prompt=prompt,
        backend="diffusers",
        model=tiny_model,
        n_seeds=2,
        params={**PARAMS, "batch_size": 2},
        enqueue=False,
    )
    job = services.job_run_inline(job=job)
    assert (job.status, job.n_done, job.n_failed) == ("done", 1, 1)
    failed = job.items.get(status="failed")
    assert failed.error == f"The pipeline's safety checker flagged seed {failed.seed}."
    assert Image.objects.filter(study=study).count() == 1
