"""Settings shared by every environment.

Every value that differs between machines comes from the environment; the modules
``local`` (embedded default), ``test`` and ``production`` only choose defaults.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Everything the platform writes at run time (SQLite file, broker folders, media).
DATA_DIR = Path(os.environ.get("PALATE_DATA_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_celery_beat",
    "axes",
    "core",
    "annotation",
    "generation",
    "rewardmodel",
    "steering",
    "portrait",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: counts failed logins, locks out after the limit.
    "axes.middleware.AxesMiddleware",
]

# Admin login throttling (django-axes): AXES_FAILURE_LIMIT wrong passwords for one
# username from one address lock that pair out for AXES_COOLOFF_TIME; a correct
# login resets the count. The lockout answers 429.
AUTHENTICATION_BACKENDS = [
    "core.auth.HttpLoginThrottle",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("AXES_COOLOFF_MINUTES", 15)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def sqlite_database(path: Path) -> dict:
    """SQLite tuned for a small multi-process deployment.

    WAL lets readers run beside one writer; IMMEDIATE transactions take the write
    lock at BEGIN, so two claims can never interleave their read-then-write steps
    (SQLite has no SELECT ... FOR UPDATE) and never deadlock on lock upgrades.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                "PRAGMA busy_timeout=20000;"
            ),
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }


if os.environ.get("DATABASE_URL"):
    DATABASES = {
        "default": dj_database_url.parse(
            os.environ["DATABASE_URL"],
            conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
            # A SELECT 1 before every request's first query: off by default (it
            # cost ~9% of the claim path); turn on behind flaky networks.
            conn_health_checks=env_bool("DATABASE_CONN_HEALTH_CHECKS", False),
        )
    }
    # "off" lets a commit return before its WAL reaches the disk: the hot path
    # then costs less CPU and no fsync wait (benchmarks/RESULTS.md, issue 16).
    # A crash can lose the last fraction of a second of commits, never consistency
    # (a lost rating's lease just expires and is dealt again). Unset: the server's
    # setting (on).
    _sync_commit = os.environ.get("DATABASE_SYNCHRONOUS_COMMIT", "").strip().lower()
    if _sync_commit:
        if _sync_commit not in {"on", "off", "local", "remote_write", "remote_apply"}:
            raise ValueError(
                "DATABASE_SYNCHRONOUS_COMMIT must be on, off, local, remote_write "
                f"or remote_apply, not {_sync_commit!r}"
            )
        DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
            f"-c synchronous_commit={_sync_commit}"
        )
else:
    DATABASES = {"default": sqlite_database(DATA_DIR / "palate.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# The languages a study's participant pages can be shown in (``Study.language``;
# so far the taste portrait is translated). Catalogues: locale/<code>/LC_MESSAGES,
# the compiled .mo committed beside its .po (docs/i18n.md).
LANGUAGES = [("en", "English"), ("de", "Deutsch")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", DATA_DIR / "staticfiles"))
# Files browsers ask for at the site's root (/favicon.ico: the admin, the API docs
# and any page without a <link rel="icon">), served by whitenoise.
WHITENOISE_ROOT = BASE_DIR / "static" / "root"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("DJANGO_MEDIA_ROOT", DATA_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Uploads above this go to a temp file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 50 * 1024 * 1024

LOGIN_URL = "admin:login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Sessions for staff only (annotator sessions are scoped to a study).
        "annotation.api.authentication.StaffSessionAuthentication",
        # DRF's TokenAuthentication, also joining the annotator (one query less).
        "annotation.api.authentication.AnnotatorTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "core.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Palate API",
    "DESCRIPTION": "Personal-taste image ratings and reward models.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models call their choices "Status": name each set. (Generation jobs
    # and items share one set, so one name covers both.)
    "ENUM_NAME_OVERRIDES": {
        "StudyStatusEnum": "annotation.models.Study.Status",
        "AssignmentStatusEnum": "annotation.models.Assignment.Status",
        "AnnotatorStatusEnum": "annotation.models.Annotator.Status",
        "GenerationStatusEnum": "generation.models.JobStatus",
        "TrainingRunStatusEnum": "rewardmodel.models.TrainingRun.Status",
        "ModelVersionStatusEnum": "rewardmodel.models.ModelVersion.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.document_error_responses",
    ],
}

# --- Celery -----------------------------------------------------------------
# Embedded default: kombu's filesystem transport, so a worker and beat run with no
# broker server. Production sets CELERY_BROKER_URL (redis:// or amqp://).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
_BROKER_DIR = DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem"):
    for _sub in ("queue", "processed", "control"):
        (_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        # kombu's default is ./control, relative to wherever the process runs.
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Redis hands an unacknowledged message to another worker after this long.
    # Acknowledgement is late (below), so a running task's message stays
    # unacknowledged for the task's whole life: the timeout must exceed the
    # longest hard time limit (training: 6 h 10 min) or Redis would start a second
    # copy of a task that is still running. A worker that died is covered by the
    # heartbeat sweep within 2 minutes instead (core.jobs, docs/architecture.md).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7 * 3600}
# Task state lives in our own models (jobs, trainings); no result backend needed.
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_IGNORE_RESULT = True
# Why each of these is set, and what a dying worker costs: docs/architecture.md
# ("Workers that die"). Acknowledge after the task, so a killed pool process's
# message is requeued (reject on worker lost), not lost; reserve one message per
# process, so a killed worker holds no queue of messages hostage; a task whose
# message will be redelivered after a lost broker connection is cancelled
# rather than run twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# A cold shutdown (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT as `make run`
# starts the worker) first lets running tasks finish for this many seconds.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = float(
    os.environ.get("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 0)
)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_DEFAULT_QUEUE = "default"
# GPU work gets its own queue so GPU workers can run elsewhere: celery -A config
# worker -Q gpu -c 1 on each GPU machine.
CELERY_TASK_ROUTES = {
    "generation.generate_diffusers": {
        "queue": os.environ.get("GENERATION_GPU_QUEUE", "gpu")
    },
}
# Long jobs and dying workers (core.jobs): a running job stamps its row every
# HEARTBEAT seconds; a redelivered task takes over a row TAKEOVER seconds old; the
# beat sweep, every SWEEP seconds, fails a row STALE seconds old. Worst case from
# a worker's death to a failed job: STALE + SWEEP = 2 minutes.
PALATE_JOB_HEARTBEAT_S = float(os.environ.get("PALATE_JOB_HEARTBEAT_S", 10))
PALATE_JOB_TAKEOVER_S = float(os.environ.get("PALATE_JOB_TAKEOVER_S", 40))
PALATE_JOB_STALE_S = float(os.environ.get("PALATE_JOB_STALE_S", 90))
PALATE_JOB_SWEEP_S = float(os.environ.get("PALATE_JOB_SWEEP_S", 30))
if not (
    0 < PALATE_JOB_HEARTBEAT_S * 2 <= PALATE_JOB_TAKEOVER_S <= PALATE_JOB_STALE_S
    and PALATE_JOB_SWEEP_S > 0
):
    raise ImproperlyConfigured(
        "Job timings need 2 × PALATE_JOB_HEARTBEAT_S ≤ PALATE_JOB_TAKEOVER_S ≤ "
        "PALATE_JOB_STALE_S and PALATE_JOB_SWEEP_S > 0."
    )
CELERY_BEAT_SCHEDULE = {
    "sweep-expired-leases": {
        "task": "annotation.sweep_expired_leases",
        "schedule": 60.0,
    },
    # Long jobs whose worker died fail within 2 minutes (core.jobs).
    "sweep-stale-exports": {
        "task": "annotation.sweep_stale_exports",
        "schedule": PALATE_JOB_SWEEP_S,
        # A sweep that waited a whole period behind busy workers is replaced
        # by the next one: they must not pile up.
        "options": {"expires": PALATE_JOB_SWEEP_S},
    },
    "sweep-stale-training-runs": {
        "task": "rewardmodel.sweep_stale_runs",
        "schedule": PALATE_JOB_SWEEP_S,
        "options": {"expires": PALATE_JOB_SWEEP_S},
    },
    "redeliver-abandoned-generation-items": {
        "task": "generation.redeliver_abandoned",
        "schedule": PALATE_JOB_SWEEP_S,
        "options": {"expires": PALATE_JOB_SWEEP_S},
    },
    "sweep-stale-optimizations": {
        "task": "steering.sweep_stale_optimizations",
        "schedule": PALATE_JOB_SWEEP_S,
        "options": {"expires": PALATE_JOB_SWEEP_S},
    },
    # The dashboard's kept figures (alpha, dealing counts) of every viewed
    # study, recomputed off the request when the study changed
    # (dashboard/figures.py).
    "refresh-dashboard-figures": {
        "task": "dashboard.refresh_figures",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    "check-integrity": {
        "task": "annotation.check_integrity",
        "schedule": 900.0,
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Palate -------------------------------------------------------------------
# Largest image accepted, in pixels (decompression-bomb guard).
# The claim and the submit as one round trip each (PL/pgSQL, migration
# annotation 0007); off: the engine's Python path on PostgreSQL too (benchmarks).
PALATE_SQL_ENGINE = env_bool("PALATE_SQL_ENGINE", True)
# Count the statements of each engine call that promises one (engine_sql.
# one_statement) and raise on a second: on in tests and under DEBUG.
PALATE_CHECK_ONE_STATEMENT = env_bool("PALATE_CHECK_ONE_STATEMENT", DEBUG)
PALATE_MAX_IMAGE_PIXELS = int(os.environ.get("PALATE_MAX_IMAGE_PIXELS", 40_000_000))
PALATE_MAX_UPLOAD_BYTES = int(
    os.environ.get("PALATE_MAX_UPLOAD_BYTES", 50 * 1024 * 1024)
)
# Finished dataset exports (archives for download). Not under MEDIA_ROOT: media
# is served publicly, exports are for staff only.
PALATE_EXPORT_DIR = Path(os.environ.get("PALATE_EXPORT_DIR", DATA_DIR / "exports"))
