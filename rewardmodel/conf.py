"""Reward-model settings: Django settings first, then the environment, then defaults.

Kept out of ``config/settings`` so the app carries its own knobs; every one can be
overridden per deployment with an environment variable (``PALATE_RM_*``).
"""

import os
from pathlib import Path

from django.conf import settings

# A strong public CLIP for real use. Offline it falls back to random weights, loudly.
DEFAULT_BACKBONE = "open_clip:ViT-L-14:datacomp_xl_s13b_b90k"


def _get(name: str, default):
    value = getattr(settings, name, None)
    if value is not None:
        return value
    env = os.environ.get(name.replace("REWARDMODEL_", "PALATE_RM_"))
    if env is None:
        return default
    return type(default)(env) if not isinstance(default, bool) else env == "1"


def backbone_key() -> str:
    """``open_clip:<model>:<pretrained tag>`` or ``pixelstats:v1``/``v2``."""
    return str(_get("REWARDMODEL_BACKBONE", DEFAULT_BACKBONE))


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


def nightly_crontab() -> dict:
    """Initial time of the nightly retraining; admins edit it in the admin later."""
    return {
        "minute": "30",
        "hour": "2",
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
    }
