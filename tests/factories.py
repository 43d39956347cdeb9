"""factory_boy factories for the annotation models."""

import io
import itertools

import factory
from PIL import Image as PILImage

from annotation import services
from annotation.models import Annotator, Study

_counter = itertools.count(1)


def png_bytes(seed: int | None = None, size: tuple[int, int] = (16, 16)) -> bytes:
    """A small PNG whose bytes differ for each seed (so sha256 differs)."""
    seed = next(_counter) if seed is None else seed
    img = PILImage.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, seed % 256))
    img.putpixel((0, 0), (seed % 256, (seed // 256) % 256, (seed // 65536) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class StudyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Study

    name = factory.Sequence(lambda n: f"Study {n}")
    slug = factory.Sequence(lambda n: f"study-{n}")
    status = Study.Status.OPEN
    instructions = "Rate how much **you** like each image."
    consent_text = "I agree to take part."


class AnnotatorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Annotator

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.annotator_create(**kwargs)


def make_images(study: Study, n: int, start: int = 0) -> list:
    return [
        services.image_create(
            study=study,
            data=png_bytes(10_000 + start + i),
            filename=f"img{start + i}.png",
            domain="art",
        )
        for i in range(n)
    ]


def join(annotator, *studies: Study):
    """Make ``annotator`` a member of each study the way the entry link does:
    consent through the study's invite token. Idempotent."""
    for study in studies:
        services.participation_consent(
            annotator=annotator, study=study, token=study.invite_token
        )
    return annotator


def joined(client, study: Study, **extra) -> Annotator:
    """Join through the invite link as a participant does (consent, start): the
    test client is then signed in as the new annotator, on the rating page."""
    from django.urls import reverse

    r = client.post(
        reverse("annotation:join", args=[study.slug]),
        {"t": study.invite_token, "agree": "on", **extra},
    )
    assert r.status_code == 302, r.content
    r = client.post(reverse("annotation:start", args=[study.slug]))
    assert r.status_code == 302
    return Annotator.objects.get(user_id=client.session["_auth_user_id"])


def rate_image(image, n: int) -> list:
    """``n`` new annotators rate this very image (the engine deals by fill level,
    so a test cannot steer a claim to one image): rows and counters written
    together, exactly as a submit leaves them."""
    from datetime import timedelta

    from django.db.models import F
    from django.utils import timezone

    from annotation.models import Assignment, Image, Rating

    now = timezone.now()
    ratings = []
    for _ in range(n):
        annotator = AnnotatorFactory()
        assignment = Assignment.objects.create(
            study_id=image.study_id,
            image=image,
            annotator=annotator,
            status=Assignment.Status.SUBMITTED,
            leased_at=now,
            expires_at=now + timedelta(minutes=10),
            finished_at=now,
        )
        Image.objects.filter(pk=image.pk).update(rating_count=F("rating_count") + 1)
        ratings.append(
            Rating.objects.create(
                study_id=image.study_id,
                image=image,
                annotator=annotator,
                assignment=assignment,
                score=4,
            )
        )
    return ratings
