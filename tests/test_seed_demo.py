import io

import pytest
from django.core.management import call_command

from annotation.models import Annotator, Image, Study
from generation.models import Prompt

pytestmark = pytest.mark.django_db


def test_seed_demo_builds_a_rateable_study_and_is_idempotent(django_user_model):
    out = io.StringIO()
    call_command("seed_demo", "--per-prompt", "1", stdout=out, stderr=io.StringIO())
    study = Study.objects.get(slug="demo")
    images = Image.objects.filter(study=study)
    assert study.status == "open"
    assert images.count() == Prompt.objects.filter(study=study).count() == 12
    assert all(i.open_slots == 15 for i in images)
    assert {i.provenance.get("backend") for i in images} == {"procedural"}
    assert f"join?t={study.invite_token}" in out.getvalue()
    assert django_user_model.objects.get(username="admin").is_staff
    call_command(
        "seed_demo", "--per-prompt", "1", stdout=io.StringIO(), stderr=io.StringIO()
    )
    assert Study.objects.count() == 1
    assert Image.objects.count() == 12
    assert Annotator.objects.filter(source="demo").count() == 3
