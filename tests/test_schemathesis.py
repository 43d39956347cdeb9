"""Schemathesis against /api/v1/schema/ (issue 10): generated requests, valid and
invalid, for every operation, with a staff token and with an annotator's token.
No answer may be a 5xx, every status code answered must be documented, and
every documented answer must match the schema (body schema and content type).

Kept modest (a few examples per operation, no shrinking deadline) so it runs in
about a minute on two cores; raise PALATE_FUZZ_EXAMPLES for a longer hunt.
"""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from core.hot_lane import get_wsgi_application
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = [pytest.mark.django_db, pytest.mark.postgres, pytest.mark.slow]

EXAMPLES = int(os.environ.get("PALATE_FUZZ_EXAMPLES", "8"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


# Loaded from the app itself at collection (the schema view needs no database):
# config.wsgi's handler, so token requests to the claim and rating endpoints
# take the hot lane (core.hot_lane).
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())


@pytest.fixture(autouse=True)
def _keep_connection():
    """Requests go through the real WSGI handler, inside the test's transaction:
    keep it from closing the connection after each request (Django's own test
    client does the same)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(db, staff_user):
    study = StudyFactory(raters_per_image=3)
    make_images(study, 3)
    annotator = join(AnnotatorFactory(), study)
    return {
        "study": study,
        "staff": Token.objects.create(user=staff_user).key,
        "annotator": Token.objects.create(user=annotator.user).key,
    }


OPERATIONS = [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation, mode, world, role: str) -> list[str]:
    """Run ``EXAMPLES`` generated requests; return the failures (one per kind)."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @_settings
    def run(case):
        params = case.path_parameters or {}
        # Point study ids at the real study half the time (random ids only 404).
        if isinstance(params.get("study_id"), int) and params["study_id"] % 2 == 0:
            params["study_id"] = world["study"].pk
        response = case.call(headers={"Authorization": f"Token {world[role]}"})
        # Every answer's status code is documented (checked here directly:
        # schemathesis' status_code_conformance skips cases of its fuzzing phase).
        documented = operation.definition.raw["responses"]
        if str(response.status_code) not in documented:
            failures.append(
                f"{operation.label} [{mode}] as {role}: answered "
                f"{response.status_code}, documented {sorted(documented)}"
            )
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # a check failed: record it, keep fuzzing
            failures.append(f"{operation.label} [{mode}] as {role}: {exc}"[:2000])

    try:
        run()
    except Unsatisfiable:
        # Negative mode on an operation with nothing to break (no parameters,
        # no body): there is no invalid request to send.
        assert mode == GenerationMode.NEGATIVE, operation.label
    return failures


_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
)


@pytest.mark.parametrize("role", ["staff", "annotator"])
def test_api_fuzzed(world, role):
    failures = []
    for operation in OPERATIONS:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _fuzz(operation, mode, world, role)
    assert not failures, "\n\n".join(failures[:10])
