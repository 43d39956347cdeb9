import pytest

from annotation import services


@pytest.fixture(autouse=True)
def _invariants_hold(request, django_db_blocker):
    """After every test here that touched the database: the one invariant check
    (counters equal rows, none over target, no duplicate pair, nothing valid or
    live from an excluded, erased or inactive annotator)."""
    uses_db = request.node.get_closest_marker("django_db") or {
        "db",
        "transactional_db",
    } & set(request.fixturenames)
    if not uses_db:
        yield
        return
    # Set the database up inside this fixture so the check runs before rollback.
    request.getfixturevalue("_django_db_helper")
    yield
    if request.node.get_closest_marker("allow_drift"):
        return
    with django_db_blocker.unblock():
        drift = services.integrity_check()
    assert drift.ok, f"invariants broken after the test: {drift}"


def pytest_generate_tests(metafunc):
    """``engine_path``: each test runs on the engine's SQL path and on its
    Python path on PostgreSQL, on the Python path on SQLite (no functions)."""
    if "engine_path" in metafunc.fixturenames:
        from django.db import connection

        paths = ["sql", "python"] if connection.vendor == "postgresql" else ["python"]
        metafunc.parametrize("engine_path", paths, indirect=True)


@pytest.fixture
def engine_path(request, settings):
    settings.PALATE_SQL_ENGINE = request.param == "sql"
    return request.param
