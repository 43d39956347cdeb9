"""Embedded default: SQLite in WAL mode and a filesystem broker; nothing to install."""

from .base import *  # noqa: F403
from .base import DATA_DIR, env_bool

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = SECRET_KEY or "palate-local-development-only"  # noqa: F405
ALLOWED_HOSTS = ALLOWED_HOSTS + ["*"] if DEBUG else ALLOWED_HOSTS  # noqa: F405
DATA_DIR.mkdir(parents=True, exist_ok=True)
