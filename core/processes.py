"""Starting and stopping the platform's own processes from tests and benchmarks
(one launcher, so the end-to-end tests, the generation benchmark and the soak run
the worker the same way)."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def celery_worker_start(
    *,
    env: Mapping[str, str],
    name: str,
    concurrency: int = 1,
    queues: Sequence[str] = ("default",),
    loglevel: str = "warning",
    log: IO | None = None,
) -> subprocess.Popen:
    """``celery -A config worker`` in its own process group, configured by ``env``
    (DJANGO_SETTINGS_MODULE, DATABASE_URL, CELERY_BROKER_URL ...). Gossip, mingle
    and heartbeat are off: nothing else is on the broker to talk to, and they
    slow start-up. ``name`` is the node name (``%h`` expands to the host)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-c",
            str(concurrency),
            "-Q",
            ",".join(queues),
            "-l",
            loglevel,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            name,
        ],
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        cwd=ROOT,
        start_new_session=True,
    )


def celery_beat_start(
    *, env: Mapping[str, str], schedule: Path, log: IO | None = None
) -> subprocess.Popen:
    """``celery -A config beat`` with the settings' schedule kept in the file
    ``schedule`` (production uses the database scheduler), in its own group."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "-s",
            str(schedule),
            "--scheduler",
            "celery.beat:PersistentScheduler",
            "-l",
            "info",
        ],
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        cwd=ROOT,
        start_new_session=True,
    )


def process_stop(proc: subprocess.Popen, *, timeout: float = 30) -> None:
    """SIGTERM the process group (a warm shutdown for Celery and gunicorn), then
    SIGKILL whatever is left after ``timeout``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process_kill(proc)


def process_kill(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group at once: a crash, no cleanup."""
    if proc.poll() is None:
        # The group may have exited since poll(): nothing left to kill then.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def process_children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux ``/proc``): a prefork Celery
    worker's pool processes."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out
