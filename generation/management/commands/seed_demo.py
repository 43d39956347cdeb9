"""seed_demo: a demo study with procedurally generated images, annotators and a
staff login. Idempotent: running it again changes nothing that exists."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from annotation import services as annotation_services
from annotation.models import Annotator, Study
from generation import services as generation_services
from generation.models import Prompt

DEMO_SLUG = "demo"
DEMO_PROMPTS = [
    {"text": "a golden desert sunset over quiet dunes", "domain": "cinematic"},
    {"text": "an icy blue winter lake at night", "domain": "cinematic"},
    {"text": "a bold geometric poster with round shapes", "domain": "design"},
    {"text": "a minimal calm logo in soft pastel tones", "domain": "design"},
    {"text": "a chaotic vivid abstract painting full of texture", "domain": "art"},
    {"text": "a serene symmetric mandala in warm amber", "domain": "art"},
    {"text": "a dark moody portrait in cinematic light", "domain": "cinematic"},
    {"text": "a bright summer fashion editorial in orange", "domain": "fashion"},
    {"text": "a monochrome minimal fashion lookbook", "domain": "fashion"},
    {"text": "an ocean storm with rough grainy waves", "domain": "art"},
    {"text": "a cozy autumn interior with candle light", "domain": "design"},
    {"text": "a neon city street at night in the rain", "domain": "cinematic"},
]
STAFF_USERNAME = "admin"
STAFF_PASSWORD = "palate-demo"


class Command(BaseCommand):
    help = (
        "Create the demo study (12 prompts × 4 seeds from the procedural backend, "
        "generated through the worker's code path), 3 demo annotators and the staff "
        f"login {STAFF_USERNAME}/{STAFF_PASSWORD}. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--per-prompt", type=int, default=4)
        parser.add_argument("--host", default="http://127.0.0.1:8000")

    def handle(self, *args, per_prompt, host, **options):
        if not settings.DEBUG:
            self.stderr.write(
                self.style.WARNING(
                    "DEBUG is off: seed_demo creates a staff account with a known "
                    "password. Change it before exposing this site."
                )
            )
        user_model = get_user_model()
        with transaction.atomic():
            staff, created = user_model.objects.get_or_create(
                username=STAFF_USERNAME,
                defaults={"is_staff": True, "is_superuser": True},
            )
            if created:
                staff.set_password(STAFF_PASSWORD)
                staff.save()
            study = Study.objects.filter(slug=DEMO_SLUG).first()
            if study is None:
                study = annotation_services.study_create(
                    name="Palate demo: what do you find beautiful?",
                    slug=DEMO_SLUG,
                    created_by=staff,
                    status=Study.Status.OPEN,
                    quota_per_annotator=24,
                    raters_per_image=15,
                    lease_seconds=600,
                    completion_code="PALATE-DEMO",
                    demographics_fields=["age_range", "art_experience"],
                    instructions=(
                        "You will see one image at a time. Rate how much **you** "
                        "like it, on a scale from 1 (strongly dislike) to 7 "
                        "(strongly like). There are no right answers: we want your "
                        "personal taste.\n\nKeys: **1–7** rate, **s** skips, "
                        "**?** shows these instructions."
                    ),
                    consent_text=(
                        "This is a demo. Your ratings are stored under a random "
                        "pseudonym and used to train a model of your taste."
                    ),
                )
        if not Prompt.objects.filter(study=study).exists():
            self.stdout.write(f"Generating {len(DEMO_PROMPTS) * per_prompt} images…")
            generation_services.demo_images_generate(
                study=study,
                prompts=DEMO_PROMPTS,
                per_prompt=per_prompt,
                created_by=staff,
            )
        for i in range(1, 4):
            if not Annotator.objects.filter(
                source="demo", external_id=f"demo-{i}"
            ).exists():
                annotation_services.annotator_create(
                    source="demo", external_id=f"demo-{i}", username=f"demo-{i}"
                )
        n_images = study.images.count()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo study '{study.slug}' has {n_images} images.\n"
                f"  Staff login:  {host}/admin/ "
                f"({STAFF_USERNAME} / {STAFF_PASSWORD})\n"
                f"  Invite link:  {host}/s/{study.slug}/join?t={study.invite_token}\n"
                f"  Prolific:     {host}/s/{study.slug}/join?t={study.invite_token}"
                "&PROLIFIC_PID=demo-pid&STUDY_ID=demo&SESSION_ID=demo-1"
            )
        )
