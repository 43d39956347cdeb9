"""Wording a lab reads as wrong (issue 22, finding 13): the versions table's
button, the nightly time, who started a training run, provenance as JSON, and
the site's icon."""

import html
import json
import re

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from generation import services as gen
from generation.models import GenerationItem
from rewardmodel.models import ModelVersion, TrainingRun

from .conftest import make_version

pytestmark = pytest.mark.django_db


def test_a_retired_version_newer_than_the_active_one_is_made_active(
    staff_client, rated_study
):
    study, people = rated_study
    older = make_version(study, people, lambda i: 0.6, active=False)
    active = make_version(study, people, lambda i: 0.6)
    newer = make_version(study, people, lambda i: 0.6, active=False)
    candidate = make_version(study, people, lambda i: 0.6, active=False)
    ModelVersion.objects.filter(pk__in=[older.pk, newer.pk]).update(status="retired")
    text = staff_client.get(reverse("dashboard:model")).content.decode()
    assert f">Roll back to v{older.pk}</button>" in text
    assert f">Make v{newer.pk} active</button>" in text
    assert f"Roll back to v{newer.pk}" not in text
    assert f">Promote v{candidate.pk}</button>" in text
    assert f"v{active.pk} active</button>" not in text  # the active one has none
    # Either way a retired version's form posts to the rollback action.
    assert f'action="{reverse("dashboard:rollback", args=[newer.pk])}"' in text


def test_the_nightly_time_is_a_sentence(staff_client):
    staff_client.post(
        reverse("dashboard:nightly"), {"hour": "2", "minute": "30", "enabled": "on"}
    )
    text = staff_client.get(reverse("dashboard:model")).content.decode()
    assert "Nightly retraining: on, at 02:30 UTC." in text
    assert "Now 2:30" not in text
    staff_client.post(reverse("dashboard:nightly"), {"hour": "4", "minute": "5"})
    text = staff_client.get(reverse("dashboard:model")).content.decode()
    assert "Nightly retraining: off (the time kept is 04:05 UTC)." in text


def test_who_started_a_run_reads_as_a_sentence(staff_client, staff_user):
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.ADMIN, created_by=staff_user
    )
    text = staff_client.get(reverse("dashboard:run", args=[run.pk])).content.decode()
    assert f"Started from the staff pages by {staff_user.username}" in text
    assert f"Admin by {staff_user.username}" not in text
    nightly = TrainingRun.objects.create(trigger=TrainingRun.Trigger.SCHEDULE)
    text = staff_client.get(reverse("dashboard:run", args=[nightly.pk])).content
    assert b"Started by the nightly schedule \xc2\xb7" in text


def test_provenance_is_shown_as_json(staff_client, study):
    prompt = gen.prompt_create(study=study, text="a misty forest", domain="art")
    job = gen.job_create(prompt=prompt, backend="procedural", enqueue=False)
    gen.job_run_inline(job=job)
    item = GenerationItem.objects.select_related("image").get(job=job)
    assert item.image.provenance
    text = staff_client.get(reverse("generation:job", args=[job.pk])).content.decode()
    shown = re.search(r'<pre class="provenance">(.*?)</pre>', text, re.S).group(1)
    assert json.loads(html.unescape(shown)) == json.loads(
        json.dumps(item.image.provenance, default=str)
    )
    assert "{'" not in html.unescape(shown)  # not a Python dict


def test_the_icon_answers_200(client, settings, tmp_path):
    page = client.get("/").content.decode()
    href = re.search(r'<link rel="icon" href="([^"]+)"', page).group(1)
    assert href == "/static/palate/favicon.svg"
    r = client.get("/favicon.ico")  # asked for by pages without the link (admin)
    assert r.status_code == 200
    assert r["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    # The linked icon, as production serves it: collected, then whitenoise.
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", "--noinput", verbosity=0)
    fresh = Client()  # whitenoise reads STATIC_ROOT when its middleware starts
    r = fresh.get(href)
    assert r.status_code == 200 and r["Content-Type"] == "image/svg+xml"
