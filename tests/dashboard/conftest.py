"""Helpers for dashboard tests: studies rated through the real engine, and model
versions with per-annotator metrics written as training writes them."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from annotation import services
from annotation.models import Rating
from rewardmodel.models import AnnotatorMetric, HeldOutPredictions, ModelVersion
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images


def rate_all(study, annotators, score_of, *, seconds=3.0, now=None):
    """Each annotator rates every image they can get, through claim + submit
    (``score_of(annotator_index, image)`` gives the score)."""
    now = now or timezone.now()
    for i, a in enumerate(annotators):
        join(a, study)
        while True:
            leases = services.assignment_claim(annotator=a, study=study, now=now)
            if not leases:
                break
            lease = leases[0]
            services.rating_submit(
                assignment_id=lease.pk,
                annotator=a,
                score=score_of(i, lease.image),
                now=now + timedelta(seconds=seconds),
            )
    return annotators


def heldout_rows(version, annotators, *, limit=20):
    """Held-out predictions as training stores them: each annotator's first
    ``limit`` valid ratings, predicted half a point high."""
    rows = []
    for a in annotators:
        pairs = list(
            Rating.objects.filter(annotator=a, study=version.study, is_valid=True)
            .order_by("pk")
            .values_list("image_id", "score")[:limit]
        )
        if not pairs:
            continue
        ids = np.asarray([p[0] for p in pairs], dtype="<i8")
        scores = np.asarray([p[1] for p in pairs], dtype="<f4")
        rows.append(
            HeldOutPredictions(
                version=version,
                annotator=a,
                split="seen",
                n_total=len(pairs) + 5,
                n=len(pairs),
                image_ids=ids.tobytes(),
                actual=scores.tobytes(),
                predicted=(scores + np.float32(0.5)).tobytes(),
            )
        )
    return HeldOutPredictions.objects.bulk_create(rows)


def make_version(
    study, annotators, accuracy_of, *, active=True, weights=True, heldout=True
):
    version = ModelVersion.objects.create(
        study=study,
        status="active" if active else "candidate",
        is_active=active,
        backbone="pixelstats:v2",
        weights_loaded=weights,
        primary_metric=0.7,
        checkpoint_path="/nonexistent.pt",
        checkpoint_sha256="0" * 64,
        promoted_at=timezone.now() if active else None,
    )
    AnnotatorMetric.objects.bulk_create(
        [
            AnnotatorMetric(
                version=version,
                annotator=a,
                split="seen",
                n_test=20,
                pairwise_accuracy=accuracy_of(i),
                spearman=accuracy_of(i) - 0.3,
                pearson=accuracy_of(i) - 0.3,
                mae=1.0,
                mae_ci_low=0.8,
                mae_ci_high=1.25,
                baselines={
                    "population": {
                        "pairwise_accuracy": 0.6,
                        "spearman": 0.2,
                        "pearson": 0.2,
                        "mae": 1.2,
                    },
                    "loo_consensus": {
                        "pairwise_accuracy": 0.62,
                        "spearman": 0.25,
                        "pearson": 0.25,
                        "mae": 1.1,
                    },
                },
            )
            for i, a in enumerate(annotators)
        ]
    )
    if heldout:
        heldout_rows(version, annotators)
    return version


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def rated_study(db):
    """6 images, 3 raters each, 4 annotators (the last one rates what is left)."""
    study = StudyFactory(raters_per_image=3, quota_per_annotator=6)
    make_images(study, 6)
    annotators = [AnnotatorFactory() for _ in range(4)]
    rate_all(study, annotators, lambda i, img: 1 + (img.pk + i) % 7)
    return study, annotators
