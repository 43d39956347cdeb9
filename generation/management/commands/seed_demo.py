"""seed_demo: a demo study with procedurally generated images, annotators and a
staff login. Idempotent: running it again changes nothing that exists.

The study, the staff login and the annotators come from
``annotation.services.demo_study_ensure``; this command adds the images (it lives
in generation because that is the part that generates)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from annotation.services import demo_study_ensure
from annotation.studies.services.demo import STAFF_PASSWORD, STAFF_USERNAME
from generation.models import Prompt
from generation.services import demo_images_generate

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
        demo = demo_study_ensure()
        study = demo.study
        if not Prompt.objects.filter(study=study).exists():
            self.stdout.write(f"Generating {len(DEMO_PROMPTS) * per_prompt} images…")
            demo_images_generate(
                study=study,
                prompts=DEMO_PROMPTS,
                per_prompt=per_prompt,
                created_by=demo.staff,
            )
        link = f"{host}/s/{study.slug}/join?t={study.invite_token}"
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo study '{study.slug}' has {study.images.count()} images.\n"
                f"  Staff login:  {host}/admin/ ({STAFF_USERNAME} / {STAFF_PASSWORD})\n"
                f"  Invite link:  {link}\n"
                f"  Prolific:     {link}"
                "&PROLIFIC_PID=demo-pid&STUDY_ID=demo&SESSION_ID=demo-1"
            )
        )
