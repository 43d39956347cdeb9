"""Krippendorff's alpha from the database's sums (``selectors.study_alpha``)
against the ``krippendorff`` package on the same value counts (issue 29)."""

import krippendorff
import numpy as np
import pytest
from django.db.models import F

from annotation import selectors
from annotation.models import Image, Rating
from tests.factories import AnnotatorFactory, StudyFactory, make_images

pytestmark = pytest.mark.django_db


def _package_alpha(table: np.ndarray) -> float:
    values = np.arange(1, 8)
    counts = np.stack([(table == v).sum(axis=0) for v in values], axis=1)
    counts = counts[counts.sum(axis=1) >= 2]
    return krippendorff.alpha(
        value_counts=counts, value_domain=values, level_of_measurement="interval"
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_alpha_from_sums_is_the_packages_alpha(seed):
    rng = np.random.default_rng(seed)
    study = StudyFactory(raters_per_image=6, scale_min=1, scale_max=7)
    images = make_images(study, 16)
    for i, img in enumerate(images):
        img.domain = ("art", "photo", "")[i % 3]
        img.save(update_fields=["domain"])
    raters = [AnnotatorFactory() for _ in range(6)]
    # Images differ in appeal, raters add noise; some cells missing, one image
    # rated once (not pairable), and an invalid rating that must not count.
    appeal = rng.normal(4, 1.2, size=len(images))
    table = np.full((len(raters), len(images)), -1)
    for j, a in enumerate(raters):
        for i, img in enumerate(images):
            if rng.random() < 0.25 or (i == 5 and j > 0):
                continue
            score = int(np.clip(round(appeal[i] + rng.normal(0, 1)), 1, 7))
            Rating.objects.create(study=study, image=img, annotator=a, score=score)
            Image.objects.filter(pk=img.pk).update(rating_count=F("rating_count") + 1)
            table[j, i] = score
    invalid = Rating.objects.filter(study=study).order_by("pk").first()
    Rating.objects.filter(pk=invalid.pk).update(is_valid=False)
    Image.objects.filter(pk=invalid.image_id).update(rating_count=F("rating_count") - 1)
    table[raters.index(invalid.annotator), images.index(invalid.image)] = -1

    result = selectors.study_alpha(study=study)
    assert result["alpha"] == pytest.approx(_package_alpha(table), abs=1e-9)
    assert result["images"] == int(((table > 0).sum(axis=0) > 0).sum())
    by_domain = {d: a for d, a, _ in result["by_domain"]}
    assert list(by_domain) == ["(none)", "art", "photo"]
    for name, k in (("art", 0), ("photo", 1), ("(none)", 2)):
        cols = [i for i in range(len(images)) if i % 3 == k]
        assert by_domain[name] == pytest.approx(_package_alpha(table[:, cols]), 1e-9)


def test_alpha_needs_two_pairable_images_and_two_values():
    study = StudyFactory(raters_per_image=3, scale_min=1, scale_max=7)
    images = make_images(study, 2)
    raters = [AnnotatorFactory() for _ in range(2)]
    assert selectors.study_alpha(study=study)["alpha"] is None  # no ratings
    for img in images:
        for a in raters:
            Rating.objects.create(study=study, image=img, annotator=a, score=4)
        Image.objects.filter(pk=img.pk).update(rating_count=2)
    assert selectors.study_alpha(study=study)["alpha"] is None  # one value only
    Rating.objects.filter(image=images[0], annotator=raters[0]).update(score=6)
    assert selectors.study_alpha(study=study)["alpha"] is not None
