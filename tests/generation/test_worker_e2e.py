"""End to end: a real ``celery -A config worker`` process on Redis turns prompts
into rateable images in the same PostgreSQL test database this test uses."""

import time

import pytest

from annotation.models import Image
from generation import services
from generation.models import GenerationItem, GenerationJob
from generation.tasks import task_for_backend
from tests.celery_worker import running_worker

from .fakes import API_KEY, FakeBFL

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def worker(redis_broker, transactional_db, tmp_path, monkeypatch):
    """Start a worker with 2 processes; yields a function that waits for items."""
    fake = FakeBFL()
    fake.start()
    monkeypatch.setenv("BFL_API_KEY", API_KEY)
    env = {
        "BFL_API_KEY": API_KEY,
        "BFL_API_BASE_URL": fake.base_url,
        "GENERATION_RETRY_BASE_SECONDS": "0.05",
    }
    with running_worker(
        broker=redis_broker, tmp_path=tmp_path, name="e2e", env=env, concurrency=2
    ) as (proc, log_path):

        def wait_for(job_ids, timeout=180):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pending = GenerationItem.objects.filter(
                    job_id__in=job_ids, status__in=["queued", "running"]
                ).count()
                if pending == 0:
                    return
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
            pytest.fail("worker did not finish:\n" + log_path.read_text())

        try:
            yield fake, wait_for
        finally:
            fake.stop()


def test_worker_turns_prompts_into_rateable_images(worker, study):
    fake, wait_for = worker
    fake.mode, fake.fail_times = "rate_limited", 1
    prompts = [
        services.prompt_create(study=study, text=f"prompt {i}", domain="art")
        for i in range(3)
    ]
    jobs = services.jobs_create(
        prompts=prompts,
        backend="procedural",
        n_seeds=3,
        params={"width": 64, "height": 64},
    )
    flux_job = services.job_create(
        prompt=prompts[0], backend="flux", n_seeds=1, params={"poll_interval": 0.01}
    )
    wait_for([j.pk for j in jobs] + [flux_job.pk])

    for job in GenerationJob.objects.filter(pk__in=[j.pk for j in jobs]):
        assert (job.status, job.n_done, job.n_failed) == ("done", 3, 0)
    flux_job.refresh_from_db()
    assert (flux_job.status, flux_job.n_done) == ("done", 1)
    flux_item = flux_job.items.get()
    assert flux_item.attempts == 1  # one 429, retried by Celery, then produced
    submits = [r for r in fake.requests if r["method"] == "POST"]
    assert len(submits) == 2

    images = Image.objects.filter(study=study)
    assert images.count() == 10
    assert all(img.open_slots == study.raters_per_image for img in images)
    assert all(img.file.storage.exists(img.file.name) for img in images)

    # Redelivery: the same tasks sent again change nothing.
    item_ids = list(
        GenerationItem.objects.filter(job__in=jobs).values_list("pk", flat=True)
    )
    for item_id in item_ids[:3]:
        task_for_backend("procedural").delay(item_id)
        task_for_backend("procedural").delay(item_id)
    time.sleep(2)  # give the worker time to (not) act on them
    wait_for([j.pk for j in jobs])
    assert Image.objects.filter(study=study).count() == 10
    assert GenerationItem.objects.filter(job__in=jobs, status="done").count() == 9
