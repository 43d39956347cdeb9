"""A small rated study for the export tests, made through the real services."""

from datetime import timedelta

from django.utils import timezone

from annotation import services
from annotation.models import Rating, Study
from tests.factories import AnnotatorFactory, make_images


def rated_study(
    *, n_images: int = 6, n_annotators: int = 4, raters: int = 3, **study_fields
) -> Study:
    """A study whose images are each rated by ``raters`` annotators (through
    claim + submit), scores varying by image and annotator, with demographics
    asked and answered; fixed created_at times so exports are comparable."""
    study = services.study_create(
        name="Export study",
        slug=study_fields.pop("slug", "export-study"),
        raters_per_image=raters,
        quota_per_annotator=n_images,
        status=Study.Status.OPEN,
        demographics_fields=["age_range", "country"],
        description="Which procedural images do people like?",
        **study_fields,
    )
    images = make_images(study, n_images)
    for i, image in enumerate(images):
        image.prompt = f"a red circle number {i}"
        image.provenance = {"backend": "procedural", "model": "shapes-v1", "seed": i}
        image.save(update_fields=["prompt", "provenance"])
    base = timezone.now().replace(microsecond=0) - timedelta(days=2)
    for a in range(n_annotators):
        annotator = AnnotatorFactory(source="prolific", external_id=f"PID{a:04d}XYZ")
        services.participation_consent(
            annotator=annotator,
            study=study,
            token=study.invite_token,
            demographics={"age_range": f"{20 + 10 * a}-{29 + 10 * a}", "country": "DE"},
        )
        while True:
            leases = services.assignment_claim(annotator=annotator, study=study)
            if not leases:
                break
            for lease in leases:
                score = 1 + (lease.image_id * 3 + a * 2) % 7
                rating, _ = services.rating_submit(
                    assignment_id=lease.pk, annotator=annotator, score=score
                )
                Rating.objects.filter(pk=rating.pk).update(
                    created_at=base + timedelta(minutes=rating.pk)
                )
    return study
