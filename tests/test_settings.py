"""Settings: production passes Django's deploy checks; the web process stays small."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(code_or_args, **env):
    # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process; a deployed
    # process never has it (check --deploy rightly refuses it).
    full_env = {**os.environ, **env}
    full_env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy(tmp_path):
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY="x" * 64 + "-a-long-random-production-secret",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/palate",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        PALATE_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret(tmp_path):
    result = run(
        ["manage.py", "check"],
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY="",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/palate",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        PALATE_DATA_DIR=str(tmp_path),
    )
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_a_broker(tmp_path):
    # Without it base.py would fall back to a local folder that remote workers
    # never read: tasks would queue silently and never run.
    result = run(
        ["manage.py", "check"],
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY="x" * 64 + "-a-long-random-production-secret",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/palate",
        CELERY_BROKER_URL="",
        PALATE_DATA_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "CELERY_BROKER_URL" in result.stderr


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "x" * 64 + "-a-long-random-production-secret",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/palate",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}


@pytest.mark.parametrize(
    "name,value,message",
    [
        (
            "DATABASE_URL",
            "sqlite:///tmp/palate.sqlite3",
            "DATABASE_URL must point at PostgreSQL in production",
        ),
        (
            "DATABASE_URL",
            "mysql://root@127.0.0.1/palate",
            "DATABASE_URL must point at PostgreSQL in production",
        ),
        (
            "CELERY_BROKER_URL",
            "filesystem://",
            "CELERY_BROKER_URL must be set in production (redis://... or amqp://...)",
        ),
        (
            "CELERY_BROKER_URL",
            "memory://",
            "CELERY_BROKER_URL must be set in production",
        ),
        (
            "BFL_API_BASE_URL",
            "http://api.bfl.ai",
            "BFL_API_BASE_URL must be an https:// URL in production",
        ),
        (
            "GEMINI_API_BASE_URL",
            "http://generativelanguage.googleapis.com",
            "GEMINI_API_BASE_URL must be an https:// URL in production",
        ),
    ],
)
def test_production_refuses_what_its_messages_say_it_needs(
    tmp_path, name, value, message
):
    """A database other than PostgreSQL, a broker other than Redis/AMQP and a
    provider base URL in clear text (the API key would travel in it) are refused
    at start, with the message that names the requirement."""
    env = {**PRODUCTION, name: value, "PALATE_DATA_DIR": str(tmp_path)}
    result = run(["manage.py", "check"], **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


@pytest.mark.parametrize(
    "name,value",
    [
        ("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/palate"),
        ("CELERY_BROKER_URL", "amqp://guest@127.0.0.1:5672//"),
        ("CELERY_BROKER_URL", "rediss://127.0.0.1:6380/0"),
        ("BFL_API_BASE_URL", "https://api.eu.bfl.ai"),
    ],
)
def test_production_accepts_the_supported_services(tmp_path, name, value):
    env = {**PRODUCTION, name: value, "PALATE_DATA_DIR": str(tmp_path)}
    result = run(["manage.py", "check"], **env)
    assert result.returncode == 0, result.stderr


def test_web_process_does_not_import_torch(tmp_path):
    code = (
        "import django, sys; django.setup(); import config.urls;"
        "from django.test import Client; Client().get('/api/v1/schema/');"
        "heavy = ('torch', 'open_clip', 'diffusers');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = run(
        code,
        DJANGO_SETTINGS_MODULE="config.settings.test",
        PALATE_DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]"), result.stdout


@pytest.mark.postgres
def test_synchronous_commit_reaches_the_postgresql_session(tmp_path):
    # The connection really runs with the setting (asked of the server), and
    # without the variable it keeps the server's own (on). The child connects to
    # the server's own "postgres" database: the suite's DATABASE_URL names one
    # that only its test_ copy is made of (CI's palate_ci does not exist).
    code = (
        "import django; django.setup(); from django.db import connection\n"
        "c = connection.cursor(); c.execute('SHOW synchronous_commit')\n"
        "print('sync=' + c.fetchone()[0])"
    )
    server = urlsplit(os.environ["DATABASE_URL"])._replace(path="/postgres")
    env = dict(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=urlunsplit(server),
        PALATE_DATA_DIR=str(tmp_path),
    )
    off = run(code, DATABASE_SYNCHRONOUS_COMMIT="off", **env)
    assert "sync=off" in off.stdout, off.stdout + off.stderr
    default = run(code, DATABASE_SYNCHRONOUS_COMMIT="", **env)
    assert "sync=on" in default.stdout, default.stdout + default.stderr


def test_synchronous_commit_refuses_an_unknown_value(tmp_path):
    result = run(
        ["manage.py", "check"],
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/palate",
        DATABASE_SYNCHRONOUS_COMMIT="sometimes",
        PALATE_DATA_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "DATABASE_SYNCHRONOUS_COMMIT must be on, off" in result.stderr
