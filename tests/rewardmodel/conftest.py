import numpy as np
import pytest

from annotation import services as ann
from tests.factories import StudyFactory, png_bytes

TINY = "open_clip:palate-tiny-vit"


def rate_study(study, annotators, *, seed: int = 0, scores=None) -> int:
    """Every annotator claims and rates until nothing is left, through the real
    assignment engine. ``scores(annotator_index, image) -> int``; default: a
    seeded per-annotator preference for the image's first pixel colour."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(len(annotators), 3))
    for a in annotators:  # members, as if they had opened the study's link
        ann.participation_consent(annotator=a, study=study, token=study.invite_token)
    n = 0
    progress = True
    while progress:
        progress = False
        for i, a in enumerate(annotators):
            leases = ann.assignment_claim(annotator=a, study=study)
            if not leases:
                continue
            lease = leases[0]
            if scores is not None:
                score = scores(i, lease.image)
            else:
                rgb = np.asarray(lease.image.provenance.get("rgb", [0, 0, 0])) / 255
                raw = 4 + 2.5 * float(taste[i] @ (rgb - 0.5)) + rng.normal(0, 0.3)
                score = int(np.clip(round(raw), study.scale_min, study.scale_max))
            ann.rating_submit(assignment_id=lease.pk, annotator=a, score=score)
            n += 1
            progress = True
    return n


def make_study(
    *,
    n_images: int = 30,
    n_annotators: int = 8,
    raters: int = 4,
    seed: int = 0,
    demographics=None,
):
    study = StudyFactory(raters_per_image=raters, quota_per_annotator=1000)
    for i in range(n_images):
        s = 5000 + seed * 1000 + i
        rgb = [(s * 37) % 256, (s * 91) % 256, s % 256]
        ann.image_create(
            study=study,
            data=png_bytes(s, size=(32, 32)),
            filename=f"i{i}.png",
            provenance={"rgb": rgb},
        )
    annotators = [
        ann.annotator_create(demographics=(demographics(i) if demographics else {}))
        for i in range(n_annotators)
    ]
    return study, annotators


@pytest.fixture
def rm_settings(settings, tmp_path):
    settings.REWARDMODEL_DIR = str(tmp_path / "rm")
    settings.REWARDMODEL_BACKBONE = TINY
    return settings


@pytest.fixture
def rated_study(db, rm_settings):
    study, annotators = make_study()
    rate_study(study, annotators)
    return study, annotators


def trained_with_unrated_image(study, *, seed: int, config: dict | None = None):
    """Train and promote a version on the study (training ``config``), then add
    one image nobody has rated (as prompt steering's candidates are) with its
    embedding."""
    from rewardmodel import embeddings
    from rewardmodel import services as rm

    run = rm.training_run_execute(
        run_id=rm.training_run_create(study=study, promote="always", config=config).pk
    )
    assert run.status == "succeeded", run.error
    image = ann.image_create(
        study=study, data=png_bytes(seed, size=(32, 32)), filename="new.png"
    )
    embeddings.embeddings_compute(backbone=run.version.backbone, image_ids=[image.pk])
    return run, image
