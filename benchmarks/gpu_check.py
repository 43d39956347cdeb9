"""GPU checks of the project's own code paths, for a lent GPU machine.

1. Embedding throughput through ``rewardmodel.backbones.OpenClipBackbone`` (the
   path the embedding cache uses: PNG bytes -> PIL -> open_clip preprocess ->
   ``encode_image`` under bf16 autocast) for ViT-B-32 and ViT-L-14, end to end
   with 1 and with ``prep_threads`` preprocessing threads, and the model alone on
   preprocessed tensors; then through the pixel cache (``rewardmodel.preprocess``,
   the path ``embeddings_compute`` takes): cold (each image decoded, resized and
   stored once) and warm (uint8 arrays read, normalised on the device, the next
   batch read while the model runs), each as a share of the model alone. Weights
   are random (seeded from the name: the machine is offline): no timing changes.
   bf16 against fp32 embeddings: cosine.
2. The diffusers backend on CUDA with a tiny random StableDiffusionPipeline
   (``tests/generation/tiny_pipeline.py``): PNGs come back, bf16 on the card,
   the same seed gives the same bytes, the pipeline is loaded once.

Needs torch with CUDA, open_clip_torch and diffusers; no Django, no database.
Run: ``python benchmarks/gpu_check.py [--images 1024] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from generation.backends import GenerationRequest  # noqa: E402
from generation.backends.diffusers import DiffusersBackend, pipelines_loaded  # noqa: E402
from generation.backends.procedural import ProceduralBackend  # noqa: E402
from rewardmodel.backbones import get_backbone  # noqa: E402


def sample_pngs(n: int, size: int) -> list[bytes]:
    """Procedural images (the offline generator) as PNG bytes, like the cache reads."""
    gen = ProceduralBackend()
    prompts = ["a lighthouse at dusk", "a bowl of fruit", "a city street in rain"]
    reqs = [
        GenerationRequest(
            prompt=prompts[i % 3],
            seed=i,
            model="",
            params={"width": size, "height": size},
        )
        for i in range(min(n, 64))
    ]
    pool = [g.data for g in gen.generate(reqs)]
    return [pool[i % len(pool)] for i in range(n)]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeat: int = 1) -> float:
    _sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync()
    return (time.perf_counter() - t0) / repeat


def embedding_figures(model: str, pngs: list[bytes], batch: int, device: str) -> dict:
    bb = get_backbone(f"open_clip:{model}", device=device)
    threads = bb.prep_threads
    out = {"model": model, "dim": bb.dim, "batch": batch, "prep_threads": threads}

    def run_all():
        for i in range(0, len(pngs), batch):
            bb.embed(pngs[i : i + batch])

    bb.embed(pngs[:batch])  # warm-up: cuDNN/cuBLAS choices, allocator
    for n_threads in (1, threads):
        bb.prep_threads = n_threads
        secs = timed(run_all)
        out[f"end_to_end_{n_threads}_threads_img_s"] = round(len(pngs) / secs, 1)
    bb.prep_threads = threads
    pix = bb.pixels(pngs[:batch]).to(device)
    out["preprocess_img_s"] = round(
        batch / _cpu_time(lambda: bb.pixels(pngs[:batch])), 1
    )
    with torch.inference_mode():
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", None)):

            def fwd(dtype=dtype):
                if dtype is None:
                    return bb._model.encode_image(pix)
                with torch.autocast(device, dtype=dtype):
                    return bb._model.encode_image(pix)

            fwd()
            secs = timed(fwd, repeat=10)
            out[f"model_only_{name}_img_s"] = round(batch / secs, 1)
        a = torch.nn.functional.normalize(fwd(torch.bfloat16).float(), dim=-1)
        b = torch.nn.functional.normalize(fwd(None).float(), dim=-1)
        cos = (a * b).sum(-1)
        out["bf16_vs_fp32_cosine_min"] = round(float(cos.min()), 5)
    out.update(cached_figures(bb, pngs, batch))
    for key in ("end_to_end_cached_cold_img_s", "end_to_end_cached_warm_img_s"):
        share = out[key] / out["model_only_bf16_img_s"]
        out[key.replace("_img_s", "_share_of_model_bf16")] = round(share, 3)
    if device == "cuda":
        out["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def cached_figures(bb, pngs: list[bytes], batch: int) -> dict:
    """End to end through the pixel cache, as ``embeddings_compute`` runs it
    (``preprocess.cached_batches`` on image rows), in a fresh cache folder: the
    first pass decodes and stores every image, the second reads the arrays."""
    import hashlib
    from types import SimpleNamespace

    from rewardmodel import preprocess

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["PALATE_RM_DIR"] = tempfile.mkdtemp(prefix="gpu-check-pixels-")
    from django.conf import settings

    settings.REWARDMODEL_DIR = settings.DATA_DIR = os.environ["PALATE_RM_DIR"]
    rows = [
        SimpleNamespace(
            # One cache entry per image, even where the sample repeats bytes.
            sha256=hashlib.sha256(f"{i}:".encode() + data).hexdigest(),
            file=SimpleNamespace(open=lambda mode, data=data: io.BytesIO(data)),
        )
        for i, data in enumerate(pngs)
    ]
    run = preprocess.cached_batches(bb)
    if run is None:
        return {}
    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]

    def embed_all():
        for _chunk, _vectors in run(chunks):
            pass

    cold = timed(embed_all)
    warm = timed(embed_all)
    return {
        "end_to_end_cached_cold_img_s": round(len(rows) / cold, 1),
        "end_to_end_cached_warm_img_s": round(len(rows) / warm, 1),
    }


def _cpu_time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def diffusers_figures(device: str) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "generation"))
    from PIL import Image as PILImage
    from tiny_pipeline import build_tiny_pipeline

    folder = build_tiny_pipeline(Path(tempfile.mkdtemp()))
    backend = DiffusersBackend()
    params = {"steps": 4, "width": 64, "height": 64, "batch_size": 4, "device": device}
    backend.validate(model=str(folder), params=params)

    def run(seeds):
        return backend.generate(
            [
                GenerationRequest(
                    prompt="a red fox", seed=s, model=str(folder), params=params
                )
                for s in seeds
            ]
        )

    t0 = time.perf_counter()
    first = run([1, 2, 3, 4])
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = run([1, 2, 3, 4])
    warm = time.perf_counter() - t0
    img = PILImage.open(io.BytesIO(first[0].data))
    prov = first[0].provenance["diffusers"]
    checks = {
        "png_64x64": img.format == "PNG" and img.size == (64, 64),
        "on_device": prov["device"] == device,
        "dtype_auto": prov["dtype"] == ("bfloat16" if device == "cuda" else "float32"),
        "same_seed_same_bytes": [g.data for g in first] == [g.data for g in again],
        "seeds_differ": len({g.data for g in first}) == 4,
        "loaded_once": len([k for k in pipelines_loaded() if k[0] == str(folder)]) == 1,
    }
    return {
        "checks": checks,
        "ok": all(checks.values()),
        "cold_batch_s": round(cold, 3),
        "warm_batch_s": round(warm, 3),
        "provenance": prov,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=512, help="PNG side in pixels")
    parser.add_argument("--models", default="ViT-B-32,ViT-L-14")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", default="", help="write the figures as JSON here")
    parser.add_argument(
        "--device",
        default="cuda",
        help="cuda (the check); cpu only to dry-run this script with tiny sizes",
    )
    args = parser.parse_args()
    if args.device == "cpu":  # the CPU path reads its thread count from settings
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "No CUDA device: this script checks the GPU paths (--device cpu: dry run)."
        )
        return 2
    report = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "images": args.images,
        "png_side": args.size,
        "embedding": [],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "embedding"}), flush=True)
    pngs = sample_pngs(args.images, args.size)
    for model in args.models.split(","):
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fig = embedding_figures(model, pngs, args.batch, args.device)
        report["embedding"].append(fig)
        print(json.dumps(fig), flush=True)
    report["diffusers"] = diffusers_figures(args.device)
    print(json.dumps(report["diffusers"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0 if report["diffusers"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
