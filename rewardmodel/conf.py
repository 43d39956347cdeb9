"""Reward-model settings: Django settings first, then the environment, then defaults.

Kept out of ``config/settings`` so the app carries its own knobs; every one can be
overridden per deployment with an environment variable (``PALATE_RM_*``).
"""

import os
from pathlib import Path

from django.conf import settings

# Public CLIPs for real use: the large one where a GPU is present, a small one on
# CPU-only machines (ViT-L-14 embedded 24 images in 3 minutes on the 2-core box).
# Offline they fail fast and fall back to random weights, loudly.
GPU_BACKBONE = "open_clip:ViT-L-14:datacomp_xl_s13b_b90k"
CPU_BACKBONE = "open_clip:ViT-B-32:laion2b_s34b_b79k"


def _get(name: str, default):
    value = getattr(settings, name, None)
    if value is not None:
        return value
    env = os.environ.get(name.replace("REWARDMODEL_", "PALATE_RM_"))
    if env is None:
        return default
    return type(default)(env) if not isinstance(default, bool) else env == "1"


def has_gpu() -> bool:
    """An NVIDIA driver is present (checked without importing torch)."""
    return Path("/proc/driver/nvidia/version").exists()


def backbone_key() -> str:
    """``open_clip:<model>:<pretrained tag>``; the default suits the machine."""
    default = GPU_BACKBONE if has_gpu() else CPU_BACKBONE
    return str(_get("REWARDMODEL_BACKBONE", default))


def data_dir() -> Path:
    path = Path(_get("REWARDMODEL_DIR", str(Path(settings.DATA_DIR) / "rewardmodel")))
    return path


def checkpoint_dir() -> Path:
    path = data_dir() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_cache_dir() -> str | None:
    """Where open_clip looks for (and would download) pretrained weights."""
    value = _get("REWARDMODEL_WEIGHTS_DIR", "")
    return value or None


def embed_batch_size() -> int:
    return int(_get("REWARDMODEL_EMBED_BATCH", 32))


def threads() -> int:
    """Threads for numeric work; 0 = chosen from the machine (``threads.py``)."""
    return int(_get("REWARDMODEL_THREADS", 0))
