"""Staff pages, the jobs API and the generate_images command."""

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation.models import Image
from generation import services
from generation.models import GenerationItem, GenerationJob, Prompt

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def prompt(study):
    return services.prompt_create(study=study, text="a misty forest", domain="art")


# --- pages ---------------------------------------------------------------------


def test_pages_are_staff_only(client, django_user_model, study):
    url = reverse("generation:study", args=[study.pk])
    assert client.get(url).status_code == 302  # to the login page
    user = django_user_model.objects.create_user(username="u", password="pw-u-12345")
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302 and "login" in response["Location"]


def test_paste_and_upload_prompts(staff_client, study):
    url = reverse("generation:prompts_add", args=[study.pk])
    response = staff_client.post(
        url, {"text": "one\ntwo\n", "format": "auto", "domain": "design"}
    )
    assert response.status_code == 302
    upload = io.BytesIO(b"text,domain,tags\nthree,fashion,a;b\n")
    upload.name = "prompts.csv"
    staff_client.post(url, {"file": upload, "format": "auto"})
    assert list(Prompt.objects.values_list("text", "domain")) == [
        ("one", "design"),
        ("two", "design"),
        ("three", "fashion"),
    ]
    page = staff_client.get(reverse("generation:study", args=[study.pk]))
    assert b"three" in page.content and b"Added 1 prompts" in page.content


def test_bad_prompt_upload_shows_the_error(staff_client, study):
    upload = io.BytesIO(b'{"text": ""}\n')
    upload.name = "p.jsonl"
    response = staff_client.post(
        reverse("generation:prompts_add", args=[study.pk]),
        {"file": upload, "format": "auto"},
    )
    assert response.status_code == 400
    assert b"Line 1: A prompt cannot be empty" in response.content


def test_create_job_then_progress_polls_until_done(
    staff_client, study, prompt, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(
            reverse("generation:jobs_add", args=[study.pk]),
            {
                "backend": "procedural",
                "model": "",
                "n_seeds": 2,
                "params": "",
                "domain": "",
            },
        )
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(
        f"/generation/jobs/{job.pk}/"
    )
    assert len(callbacks) == 1
    progress_url = reverse("generation:job_progress", args=[job.pk])
    page = staff_client.get(reverse("generation:job", args=[job.pk]))
    assert f'hx-get="{progress_url}"'.encode() in page.content  # polling
    services.job_run_inline(job=job)
    fragment = staff_client.get(progress_url, headers={"HX-Request": "true"})
    assert b"hx-get" not in fragment.content  # finished: polling stops
    assert b"<html" not in fragment.content
    assert fragment.content.count(b"<img") == 2
    assert b"procedural" in fragment.content  # provenance shown


@pytest.mark.parametrize(
    "data,message",
    [
        ({"backend": "procedural", "n_seeds": 0}, b"greater than or equal to 1"),
        ({"backend": "flux", "n_seeds": 1}, b"BFL_API_KEY"),
        ({"backend": "procedural", "n_seeds": 1, "model": "nope"}, b"Unknown model"),
        ({"backend": "procedural", "n_seeds": 1, "params": "{bad"}, b"Not valid JSON"),
    ],
)
def test_bad_job_form_queues_nothing(
    staff_client, study, prompt, monkeypatch, data, message
):
    monkeypatch.delenv("BFL_API_KEY", raising=False)
    response = staff_client.post(reverse("generation:jobs_add", args=[study.pk]), data)
    assert response.status_code == 400 and message in response.content
    assert not GenerationJob.objects.exists()


def test_cancel_and_retry_buttons(staff_client, prompt):
    job = services.job_create(
        prompt=prompt, backend="procedural", n_seeds=2, enqueue=False
    )
    response = staff_client.post(reverse("generation:job_cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled"
    fragment = staff_client.post(
        reverse("generation:job_retry", args=[job.pk]), headers={"HX-Request": "true"}
    )
    assert fragment.status_code == 200 and b"hx-get" in fragment.content
    job.refresh_from_db()
    assert job.status == "queued" and job.n_cancelled == 0


# --- API -----------------------------------------------------------------------


def test_api_create_and_poll_job(staff_client, study):
    response = staff_client.post(
        "/api/v1/generation/jobs/",
        {
            "study": study.pk,
            "text": "a paper crane",
            "domain": "design",
            "backend": "procedural",
            "n_seeds": 2,
            "params": {"width": 32, "height": 32},
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["n_seeds"] == 2
    assert [i["seed"] for i in body["items"]] == [0, 1]
    services.job_run_inline(job=GenerationJob.objects.get(pk=body["id"]))
    body = staff_client.get(f"/api/v1/generation/jobs/{body['id']}/").json()
    assert body["status"] == "done" and body["n_done"] == 2
    assert all(i["image_url"].startswith("http://") for i in body["items"])


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"backend": "nope", "n_seeds": 1}, "Unknown backend"),
        ({"backend": "procedural", "n_seeds": 0}, "greater than or equal to 1"),
        ({"backend": "procedural", "n_seeds": 1, "text": ""}, "cannot be empty"),
        ({"backend": "procedural", "n_seeds": 1, "text": "w" * 2001}, "at most 2000"),
        ({"backend": "gemini", "n_seeds": 1}, "GEMINI_API_KEY"),
    ],
)
def test_api_bad_input_is_400_and_writes_nothing(
    staff_client, study, monkeypatch, payload, message
):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    payload = {"study": study.pk, "text": "a valid prompt", **payload}
    response = staff_client.post(
        "/api/v1/generation/jobs/", payload, content_type="application/json"
    )
    assert response.status_code == 400
    assert message in str(response.json())
    assert not GenerationJob.objects.exists() and not Prompt.objects.exists()


def test_api_is_staff_only(client, django_user_model, prompt):
    user = django_user_model.objects.create_user(username="u", password="pw-u-12345")
    client.force_login(user)
    response = client.post(
        "/api/v1/generation/jobs/",
        {"prompt": prompt.pk, "backend": "procedural", "n_seeds": 1},
        content_type="application/json",
    )
    assert response.status_code == 403


# --- command -------------------------------------------------------------------


def test_generate_images_inline_makes_rateable_images(study, prompt):
    out = io.StringIO()
    call_command(
        "generate_images",
        "--study",
        study.slug,
        "--backend",
        "procedural",
        "--per-prompt",
        "2",
        "--params",
        '{"width": 32, "height": 32}',
        "--prompt",
        "a second prompt",
        "--inline",
        stdout=out,
        stderr=io.StringIO(),
    )
    assert "Queued 2 jobs (4 images)" in out.getvalue()
    assert "4 images made, 0 failed" in out.getvalue()
    assert (
        Image.objects.filter(study=study, open_slots=study.raters_per_image).count()
        == 4
    )


def test_generate_images_queues_for_workers(
    study, prompt, django_capture_on_commit_callbacks
):
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        call_command(
            "generate_images",
            "--study",
            str(study.pk),
            "--backend",
            "procedural",
            stdout=out,
        )
    assert len(callbacks) == 1
    assert GenerationItem.objects.filter(status="queued").count() == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--backend", "nope"], "Unknown backend"),
        (["--backend", "procedural", "--per-prompt", "0"], "between 1 and 1000"),
        (["--backend", "procedural", "--model", "x"], "Unknown model"),
        (["--backend", "flux"], "BFL_API_KEY"),
        (["--backend", "procedural", "--prompt", ""], "cannot be empty"),
        (["--backend", "procedural", "--params", "[1"], "not valid JSON"),
    ],
)
def test_generate_images_bad_input(study, prompt, monkeypatch, args, message):
    monkeypatch.delenv("BFL_API_KEY", raising=False)
    with pytest.raises(CommandError, match=message):
        call_command(
            "generate_images", "--study", study.slug, *args, stdout=io.StringIO()
        )
    assert not GenerationJob.objects.exists()


def test_generate_images_unknown_study():
    with pytest.raises(CommandError, match="No study"):
        call_command("generate_images", "--study", "nope", "--backend", "procedural")


def test_cancelling_a_paid_job_asks_first(staff_client, prompt, monkeypatch):
    """A job on a paid backend (FLUX) is cancelled only once confirmed; the
    confirmation says how many images are not made (issue 22)."""
    monkeypatch.setenv("BFL_API_KEY", "test-key")
    job = services.job_create(prompt=prompt, backend="flux", n_seeds=3, enqueue=False)
    url = reverse("generation:job_cancel", args=[job.pk])
    response = staff_client.post(url)
    body = response.content.decode()
    assert response.status_code == 200 and 'id="confirm"' in body
    assert "3 queued images are not made." in body
    job.refresh_from_db()
    assert job.status == "queued"
    assert staff_client.post(url, {"confirmed": "yes"}).status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled" and job.n_cancelled == 3


# --- what a batch makes and costs, and asking before paying --------------------


def _job_post(study, **extra):
    return {
        "backend": "flux",
        "model": "",
        "n_seeds": 2,
        "params": "",
        "domain": "",
        **extra,
    }


def test_added_prompts_are_preselected_with_the_estimate(staff_client, study):
    for i in range(15):
        services.prompt_create(study=study, text=f"old prompt {i}")
    staff_client.post(
        reverse("generation:prompts_add", args=[study.pk]),
        {"text": "new one\nnew two\nnew three\n", "format": "auto"},
    )
    added = list(
        Prompt.objects.filter(text__startswith="new").values_list("pk", flat=True)
    )
    body = staff_client.get(
        reverse("generation:study", args=[study.pk])
    ).content.decode()
    ticked = re.findall(r'name="prompts" value="(\d+)"[^>]*checked', body)
    assert sorted(map(int, ticked)) == sorted(added)
    # procedural, 4 seeds by default: 3 prompts × 4 images, free.
    estimate = re.search(r'id="gen-estimate".*?</p>', body, re.S)[0]
    text = re.sub(r"<[^>]+>", "", estimate)
    assert "3 prompts × 4 images = 12 images on procedural" in text
    assert "0.00 USD" in text


def test_paid_jobs_are_confirmed_on_the_server(
    staff_client, study, monkeypatch, settings, django_capture_on_commit_callbacks
):
    monkeypatch.setenv("BFL_API_KEY", "test-key")
    settings.GENERATION_COST_PER_IMAGE = {"flux": 0.05}
    prompts = [services.prompt_create(study=study, text=f"p{i}") for i in range(5)]
    url = reverse("generation:jobs_add", args=[study.pk])
    picked = [str(p.pk) for p in prompts[:3]]
    first = staff_client.post(url, _job_post(study, prompts=picked))
    assert first.status_code == 200 and not GenerationJob.objects.exists()
    text = re.sub(r"<[^>]+>", "", first.content.decode())
    assert "3 prompts × 2 images = 6 images on flux" in text
    assert "0.30 USD" in text
    token = re.search(r'name="confirm" value="([^"]+)"', first.content.decode())[1]
    # The token covers exactly what it described: more prompts, another seed
    # count or a forged token lead back to the confirmation, never to jobs.
    for changed in (
        _job_post(study, prompts=[str(p.pk) for p in prompts], confirm=token),
        _job_post(study, prompts=picked, n_seeds=3, confirm=token),
        _job_post(study, prompts=picked, confirm=token[:-2] + "xx"),
    ):
        again = staff_client.post(url, changed)
        assert again.status_code == 200 and b'name="confirm"' in again.content
    assert not GenerationJob.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        done = staff_client.post(url, _job_post(study, prompts=picked, confirm=token))
    assert done.status_code == 302
    assert GenerationJob.objects.count() == 3
    assert GenerationItem.objects.count() == 6


def test_free_jobs_need_no_confirmation(
    staff_client, study, prompt, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        r = staff_client.post(
            reverse("generation:jobs_add", args=[study.pk]),
            _job_post(study, backend="procedural"),
        )
    assert r.status_code == 302 and GenerationJob.objects.count() == 1
