"""A gunicorn config file that profiles each worker by CPU time (cProfile with
``time.thread_time``): one profile for the worker's main loop (the poller, the
hand-off to threads) and one per request thread, written when the worker exits.

    GUNICORN_CMD_ARGS="-c benchmarks/gunicorn_profile.py" \\
        .venv/bin/python benchmarks/assignment_load.py --max-seconds 30 ...

Profiles land in ``$PALATE_GUNICORN_PROFILE_DIR`` (default
``/tmp/palate-gunicorn-profile``) as ``worker-<pid>-<n>.prof`` (0: the main loop);
read them with ``pstats``. The profiler slows Python code more than C code, so
read the shares, not the absolute times.
"""

import cProfile
import os
import threading
import time
from pathlib import Path

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()
_local = threading.local()


def post_worker_init(worker):
    main = cProfile.Profile(time.thread_time)
    _profiles.append(main)
    handle = worker.handle

    def profiled_handle(*args, **kwargs):
        profile = getattr(_local, "profile", None)
        if profile is None:
            profile = _local.profile = cProfile.Profile(time.thread_time)
            with _lock:
                _profiles.append(profile)
        profile.enable()
        try:
            return handle(*args, **kwargs)
        finally:
            profile.disable()

    worker.handle = profiled_handle
    main.enable()


def worker_exit(server, worker):
    _profiles[0].disable()
    out = Path(
        os.environ.get("PALATE_GUNICORN_PROFILE_DIR", "/tmp/palate-gunicorn-profile")
    )
    out.mkdir(parents=True, exist_ok=True)
    for n, profile in enumerate(_profiles):
        profile.dump_stats(out / f"worker-{os.getpid()}-{n}.prof")
