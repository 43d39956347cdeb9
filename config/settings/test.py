"""Test settings: PostgreSQL when DATABASE_URL is set (CI), SQLite otherwise."""

from .base import *  # noqa: F403
from .base import DATA_DIR, DATABASES

SECRET_KEY = "palate-tests"
DEBUG = False
PALATE_CHECK_ONE_STATEMENT = True  # engine_sql.one_statement counts statements
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DATA_DIR.mkdir(parents=True, exist_ok=True)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so threads and worker processes share one database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405 (whitenoise warns if absent)
