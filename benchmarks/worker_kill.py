"""Kill the worker during a long job and measure how long the job takes to come
back: resumed (pool process killed: the redelivered task takes the job over) or
failed with a reason (whole worker killed: the beat sweep), with no partial files
left and the next run possible (issue 24, 1-3; docs/architecture.md, "Workers
that die").

    .venv/bin/python benchmarks/worker_kill.py            # default job timings
    .venv/bin/python benchmarks/worker_kill.py --fast     # the tests' timings

Needs PostgreSQL (DATABASE_URL) and Redis (--broker). Each case holds the job
mid-run (an image file that blocks, a table lock: tests/worker_faults.py),
SIGKILLs the pool process or the whole worker's process group, lets the job go
on, starts a fresh worker where the old one is gone, and times kill → final
state. Prints one line per case.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import setup_django  # noqa: E402

CASES = ["export-pool", "export-worker", "training-pool", "training-worker"]


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", default="redis://127.0.0.1:6379/7")
    p.add_argument("--fast", action="store_true", help="the tests' short timings")
    p.add_argument("--cases", default=",".join(CASES))
    return p.parse_args()


def _broker(url: str) -> None:
    import redis

    from config.celery import app
    from tests.celery_worker import _forget_producers

    redis.Redis.from_url(url).flushdb()
    app.conf.broker_url = url
    app.conf.broker_transport_options = {}
    _forget_producers()


def _export_case(kind, study, tmp, env):
    from annotation.datasets.services.export_jobs import export_enqueue
    from annotation.models import Export

    root = Path(env["PALATE_EXPORT_DIR"])

    def start():
        return export_enqueue(study=study).pk

    def held(pk):
        e = Export.objects.get(pk=pk)
        return e.status == "running" and (root / f".work-{pk}").is_dir()

    def final(pk):
        e = Export.objects.get(pk=pk)
        return e if e.status in ("succeeded", "failed") else None

    from django.conf import settings

    from tests.worker_faults import file_blocked

    last = study.images.order_by("pk").last().file.name
    hold = lambda: file_blocked(Path(settings.MEDIA_ROOT) / last)  # noqa: E731
    return _run(kind, hold, start, held, final, root, env, tmp)


def _training_case(kind, study, tmp, env):
    from rewardmodel import conf, services
    from rewardmodel.models import TrainingRun

    def start():
        return services.training_run_enqueue(study=study, config={"seed": 1}).pk

    def held(pk):
        return TrainingRun.objects.get(pk=pk).status == "running"

    def final(pk):
        r = TrainingRun.objects.get(pk=pk)
        return r if r.status in ("succeeded", "failed") else None

    from tests.celery_worker import worker_database_url
    from tests.worker_faults import table_locked

    root = conf.checkpoint_dir()
    hold = lambda: table_locked(worker_database_url(), "annotation_rating")  # noqa: E731
    return _run(kind, hold, start, held, final, root, env, tmp)


def _run(kind, hold, start, held, final, root, env, tmp):
    """One case: hold, kill, release, time kill → final state, then a next run."""
    from core.processes import process_kill
    from tests.celery_worker import running_beat, running_worker
    from tests.worker_faults import kill_pool, partial_files, wait_until

    broker = env["CELERY_BROKER_URL"]
    with running_beat(broker=broker, tmp_path=tmp, env=env):
        with running_worker(broker=broker, tmp_path=tmp, name="w1", env=env) as (
            proc,
            _,
        ):
            with hold() as lock:
                pk = start()
                wait_until(lambda: held(pk), timeout=180, what="the job mid-run")
                had = len(partial_files(root))
                killed = time.monotonic()
                if kind == "pool":
                    kill_pool(proc.pid)
                else:
                    process_kill(proc)
                lock.release()
            with running_worker(broker=broker, tmp_path=tmp, name="w2", env=env):
                done = wait_until(lambda: final(pk), timeout=600, what="final")
                took = time.monotonic() - killed
                left = partial_files(root)
                nxt = start()
                again = wait_until(lambda: final(nxt), timeout=600, what="next")
    how = "resumed" if done.status == "succeeded" else f"failed ({done.error[:60]})"
    return {
        "outcome": how,
        "kill_to_final_s": round(took, 1),
        "partial_files_at_kill": had,
        "partial_files_after": len(left),
        "next_run": again.status,
    }


def main() -> None:
    args = _args()
    tmp = Path(tempfile.mkdtemp(prefix="worker-kill-"))
    timings = {}
    if args.fast:
        from tests.worker_faults import FAST_JOBS

        timings = dict(FAST_JOBS)
    os.environ.update(timings)
    os.environ["PALATE_EXPORT_DIR"] = str(tmp / "exports")
    os.environ["PALATE_RM_BACKBONE"] = "open_clip:palate-tiny-vit"
    os.environ["PALATE_RM_DIR"] = str(tmp / "rm")
    connection, old_name = setup_django(str(tmp), "worker_kill")
    from django.conf import settings

    settings.PALATE_EXPORT_DIR = tmp / "exports"
    settings.REWARDMODEL_DIR = str(tmp / "rm")
    settings.REWARDMODEL_BACKBONE = "open_clip:palate-tiny-vit"
    for key, value in timings.items():
        setattr(settings, key, float(value))
    _broker(args.broker)
    env = {
        "PALATE_EXPORT_DIR": str(tmp / "exports"),
        "PALATE_RM_DIR": str(tmp / "rm"),
        "PALATE_RM_BACKBONE": "open_clip:palate-tiny-vit",
        "OMP_NUM_THREADS": "1",
        "CELERY_BROKER_URL": args.broker,
        **timings,
    }
    try:
        from tests.annotation.export_fixtures import rated_study
        from tests.rewardmodel.conftest import make_study, rate_study

        export_study = rated_study()
        train_study, annotators = make_study(n_images=12, n_annotators=4, raters=3)
        rate_study(train_study, annotators)
        print(f"job timings: {timings or 'defaults (10/40/90/30 s)'}")
        for case in args.cases.split(","):
            job, kind = case.split("-")
            sub = tmp / case
            sub.mkdir()
            fn = _export_case if job == "export" else _training_case
            study = export_study if job == "export" else train_study
            print(case, fn(kind, study, sub, env), flush=True)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
