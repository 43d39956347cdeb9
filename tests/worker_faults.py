"""Fault injection for long jobs: hold a job mid-run, kill the worker, watch.

A job is held mid-run without any hook in the product. An export: the last
image's file is replaced by a named pipe nobody writes to, so the worker's open()
waits there after it wrote the rating tables and the other images (the job
"running", its heartbeat thread stamping, partial files on disk). Training:
another connection takes an ACCESS EXCLUSIVE lock on the rating table, which the
run reads right after it marked itself running. Then the pool process (or the
whole worker) is SIGKILLed and the file or the lock given back. Used by the
worker-kill tests and ``benchmarks/worker_kill.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from core.processes import process_children

# Short job timings for the worker and beat under test (the defaults are 10 s,
# 40 s, 90 s and 30 s; core.jobs). The same ratios: takeover after 3 missed
# heartbeats, failed after 6, the sweep twice per stale period.
FAST_JOBS = {
    "PALATE_JOB_HEARTBEAT_S": "1",
    "PALATE_JOB_TAKEOVER_S": "3",
    "PALATE_JOB_STALE_S": "6",
    "PALATE_JOB_SWEEP_S": "2",
}


def wait_until(check: Callable[[], object], *, timeout: float, what: str):
    """Poll ``check`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")


@contextmanager
def table_locked(database_url: str, table: str):
    """Hold ``LOCK TABLE … IN ACCESS EXCLUSIVE MODE`` on another connection until
    the block ends (or ``release()`` is called on what it yields)."""
    import psycopg2

    conn = psycopg2.connect(database_url)
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')

    class Lock:
        def release(self) -> None:
            if not conn.closed:
                conn.rollback()
                conn.close()

    lock = Lock()
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def file_blocked(path: Path):
    """Replace ``path`` with a named pipe until the block ends (or ``release()``
    is called on what it yields): a reader's open() waits there."""
    path = Path(path)
    saved = path.with_name(path.name + ".held")
    path.rename(saved)
    os.mkfifo(path)

    class Hold:
        def release(self) -> None:
            if saved.exists():
                path.unlink()
                saved.rename(path)

    hold = Hold()
    try:
        yield hold
    finally:
        hold.release()


def kill_pool(worker_pid: int) -> list[int]:
    """SIGKILL every pool process of a prefork worker (the main process lives
    and starts new ones); returns the pids killed."""
    pids = process_children(worker_pid)
    assert pids, f"worker {worker_pid} has no pool process"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def partial_files(root: Path) -> list[str]:
    """Work folders and half-written files left under ``root``."""
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith(".work-") or p.name.endswith(".partial")
    )
