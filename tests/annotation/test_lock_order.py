"""The lock order on the real database: a status change locks the annotator
``FOR NO KEY UPDATE`` (docs/architecture.md, "Lock order"), so while it is in
flight, and even while it waits behind the engine, it never blocks a
transaction that only inserts a row naming that annotator.

The staff pause and QC's automatic pause (``annotator_moderate``) once took a
plain ``FOR UPDATE``: that conflicts with the ``FOR KEY SHARE`` every such
insert takes, so a pause waiting behind a rating on one of the person's images
held up, for as long as that rating ran, everything that inserts a row naming
them (joining another study, an optimisation, a model's per-annotator metrics).
"""

import threading
import time

import pytest
from django.db import connection

from annotation import services
from annotation.models import Annotator, Assignment, Image, Participation
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _wait_until_blocked(pid: int, timeout: float = 10.0) -> None:
    """Until the backend ``pid`` waits on a lock (the pause is mid-transaction)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
            )
            row = cursor.fetchone()
            if row and row[0] == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError("the pause never reached its wait on the image")


def _hold_image(image_id: int, held: threading.Event, release: threading.Event):
    """Another annotator's rating of the same image, in flight: it holds the
    image's row lock, as ``rating_submit`` does until it commits."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(
                f"SELECT id FROM {Image._meta.db_table} WHERE id = %s "
                "FOR NO KEY UPDATE",
                [image_id],
            )
            held.set()
            release.wait(20)
            cursor.execute("COMMIT")
    finally:
        connection.close()


def _pause(annotator_id: int, action: str, out: dict) -> None:
    try:
        out["pid"] = _backend_pid()
        services.annotator_moderate(
            annotator=Annotator.objects.get(pk=annotator_id), action=action
        )
        out["pause"] = "done"
    except Exception as exc:  # reported by the test's assertion
        out["pause"] = repr(exc)
    finally:
        connection.close()


def _join_within(seconds: int, annotator_id: int, study) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = '{seconds}s'")
    try:
        join(Annotator.objects.get(pk=annotator_id), study)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")


@pytest.mark.parametrize("action", ["pause", "auto_pause"])
def test_a_pause_waiting_on_the_engine_does_not_block_inserts_naming_the_person(
    action,
):
    study, other = StudyFactory(raters_per_image=3), StudyFactory()
    make_images(study, 2)
    person = join(AnnotatorFactory(), study)
    (lease,) = services.assignment_claim(annotator=person, study=study)
    held, release, out = threading.Event(), threading.Event(), {}
    holder = threading.Thread(target=_hold_image, args=(lease.image_id, held, release))
    holder.start()
    assert held.wait(10)
    pauser = threading.Thread(target=_pause, args=(person.pk, action, out))
    pauser.start()
    try:
        while "pid" not in out:
            time.sleep(0.01)
        # The pause holds the annotator and waits for the image (lock order:
        # Annotator, ..., Assignment, Image).
        _wait_until_blocked(out["pid"])
        # Joining another study inserts a Participation naming the person:
        # FOR KEY SHARE on the annotator, which FOR NO KEY UPDATE lets by (a
        # plain FOR UPDATE made it wait here until the lock timeout).
        _join_within(3, person.pk, other)
        joined_meanwhile = Participation.objects.filter(
            annotator=person, study=other
        ).exists()
    finally:
        release.set()
        holder.join(20)
        pauser.join(20)
    assert joined_meanwhile
    assert out["pause"] == "done", out
    person.refresh_from_db()
    assert person.status == Annotator.Status.PAUSED
    assert Assignment.objects.get(pk=lease.pk).status == Assignment.Status.EXPIRED
    assert services.integrity_check().ok
