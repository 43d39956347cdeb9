"""The demo study, its staff login and its demo annotators (``seed_demo``).

Idempotent: each piece is created only when missing, so running the demo again
changes nothing that exists. Images come from the generation app, which calls this
first and then fills the study.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from annotation.models import Annotator, Study
from annotation.studies.services.studies import annotator_create, study_create

DEMO_SLUG = "demo"
STAFF_USERNAME = "admin"
STAFF_PASSWORD = "palate-demo"
DEMO_ANNOTATORS = 3


@dataclass
class DemoStudy:
    study: Study
    staff: object  # the staff user
    staff_created: bool


def demo_study_ensure(*, slug: str = DEMO_SLUG) -> DemoStudy:
    """The open demo study, the staff login (known password) and the demo
    annotators, each created only if missing."""
    user_model = get_user_model()
    with transaction.atomic():
        staff, staff_created = user_model.objects.get_or_create(
            username=STAFF_USERNAME,
            defaults={"is_staff": True, "is_superuser": True},
        )
        if staff_created:
            staff.set_password(STAFF_PASSWORD)
            staff.save()
        study = Study.objects.filter(slug=slug).first() or _demo_study_create(
            slug=slug, staff=staff
        )
        for i in range(1, DEMO_ANNOTATORS + 1):
            external_id = f"demo-{i}"
            if not Annotator.objects.filter(
                source="demo", external_id=external_id
            ).exists():
                annotator_create(
                    source="demo", external_id=external_id, username=external_id
                )
    return DemoStudy(study=study, staff=staff, staff_created=staff_created)


def _demo_study_create(*, slug: str, staff) -> Study:
    return study_create(
        name="Palate demo: what do you find beautiful?",
        slug=slug,
        created_by=staff,
        status=Study.Status.OPEN,
        quota_per_annotator=24,
        raters_per_image=15,
        lease_seconds=600,
        completion_code="PALATE-DEMO",
        demographics_fields=["age_range", "art_experience"],
        instructions=(
            "You will see one image at a time. Rate how much **you** like it, on a "
            "scale from 1 (strongly dislike) to 7 (strongly like). There are no "
            "right answers: we want your personal taste.\n\nKeys: **1–7** rate, "
            "**s** skips, **?** shows these instructions."
        ),
        consent_text=(
            "This is a demo. Your ratings are stored under a random pseudonym and "
            "used to train a model of your taste."
        ),
    )
