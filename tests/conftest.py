import zlib
from pathlib import Path

import pytest
from django.db import connection

from annotation import services
from tests.celery_worker import redis_broker  # noqa: F401 (fixture for e2e tests)
from tests.factories import AnnotatorFactory, StudyFactory

# The suites `make test` also runs on SQLite, the database `make run` uses (the
# engine's Python path, the annotator's pages and API, quality control): marked
# ``embedded`` here; their tests marked ``postgres`` are skipped there.
EMBEDDED_SUITES = {
    "annotation/test_engine.py",
    "annotation/test_engine_sql.py",
    "annotation/test_engine_tally.py",
    "annotation/test_exclusion.py",
    "annotation/test_membership.py",
    "annotation/test_web_views.py",
    "annotation/test_api.py",
    "annotation/test_api_hot.py",
    "annotation/test_quality.py",
    "annotation/test_quality_api.py",
    "annotation/test_qc_bots.py",
    "annotation/test_qc_dealing.py",
    "annotation/test_qc_uniform.py",
    "dashboard/test_kept_figures.py",
    "dashboard/test_agreement_sort.py",
}


def pytest_collection_modifyitems(config, items):
    on_sqlite = connection.vendor == "sqlite"
    root = Path(__file__).parent
    for item in items:
        if item.path.relative_to(root).as_posix() in EMBEDDED_SUITES:
            item.add_marker(pytest.mark.embedded)
        if on_sqlite and "postgres" in item.keywords:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs PostgreSQL: set DATABASE_URL (make test does)"
                )
            )
        if not on_sqlite and "sqlite_only" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="SQLite-only test"))


@pytest.fixture(autouse=True)
def _seeded_engine(request):
    """The engine deals "random among equals": seed it per test, so a failure
    replays the same way (the seed is the test's id)."""
    services.engine_seed(seed=zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def study(db):
    return StudyFactory(raters_per_image=3, quota_per_annotator=50)


@pytest.fixture
def annotator(db):
    return AnnotatorFactory()


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="pw-staff-123", is_staff=True, is_superuser=True
    )
