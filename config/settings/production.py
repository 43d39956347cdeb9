"""Production: PostgreSQL (DATABASE_URL), Redis or RabbitMQ (CELERY_BROKER_URL)."""

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DATABASES, SECRET_KEY, env_bool

if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production.")
# The row locks, SKIP LOCKED work queues and constraints the engine relies on are
# PostgreSQL's: SQLite (or anything else) is refused, not merely discouraged.
_engine = DATABASES["default"]["ENGINE"]
if not os.environ.get("DATABASE_URL") or not _engine.endswith(
    ("postgresql", "postgis")
):
    raise ImproperlyConfigured(
        "DATABASE_URL must point at PostgreSQL in production (postgres://...)."
    )
# base.py falls back to a local filesystem broker for the embedded setup; in
# production that would queue tasks into a folder that remote workers never read.
BROKER_SCHEMES = {"redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp"}
if urlsplit(os.environ.get("CELERY_BROKER_URL", "")).scheme not in BROKER_SCHEMES:
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL must be set in production (redis://... or amqp://...)."
    )
# Hosted generation APIs get their keys only over HTTPS (the backends send the key
# to the configured base URL's scheme; see generation/backends/urls.py).
for _name in ("BFL_API_BASE_URL", "GEMINI_API_BASE_URL"):
    if os.environ.get(_name) and urlsplit(os.environ[_name]).scheme != "https":
        raise ImproperlyConfigured(f"{_name} must be an https:// URL in production.")

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", 31536000))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
