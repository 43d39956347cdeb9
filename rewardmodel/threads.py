"""How many threads numeric work may use on this machine.

On a small, shared machine more threads are slower, not faster: on the 2-core CI
box one BLAS/torch thread was 4× faster than two while other jobs ran, and an
unbounded OpenBLAS pool made the closed-form fit 15× slower. So: half the CPUs
this process may run on (at least one), unless ``REWARDMODEL_THREADS`` /
``PALATE_RM_THREADS`` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys


def thread_count() -> int:
    from . import conf

    configured = conf.threads()
    if configured > 0:
        return configured
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


@contextlib.contextmanager
def compute_threads():
    """Limit BLAS (numpy) and, if loaded, torch to ``thread_count()`` threads."""
    from threadpoolctl import threadpool_limits

    n = thread_count()
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)
