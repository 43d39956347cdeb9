"""The stored five-way split (annotation.splits): deterministic, stored,
stable."""

import pytest
from django.db import IntegrityError, transaction

from annotation import selectors, services, splits
from annotation.models import Rating
from core.exceptions import InvalidInput
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = pytest.mark.django_db


def rate_all(study, annotators, score=4):
    """Every annotator rates everything they are dealt, through the engine."""
    for i, annotator in enumerate(annotators):
        join(annotator, study)
        while True:
            leases = services.assignment_claim(annotator=annotator, study=study)
            if not leases:
                break
            services.rating_submit(
                assignment_id=leases[0].pk,
                annotator=annotator,
                score=1 + (i + leases[0].image_id) % 7,
            )


def test_split_is_a_pure_function_with_the_published_semantics():
    seen_images = {}
    for a in range(400):
        group = splits.annotator_split_group(annotator_key=f"a-{a:012x}")
        for image in range(30):
            key = {"image_key": f"{image:064x}", "annotator_key": f"a-{a:012x}"}
            s = splits.split_assign(**key)
            assert s == splits.split_assign(**key)
            if group == "seen":
                # Seen annotators: the image decides, the same for everyone.
                assert seen_images.setdefault(image, s) == s
                assert s in (splits.TRAIN, splits.VAL_SEEN, splits.TEST_SEEN)
            else:
                # Unseen annotators: all their ratings in one unseen split.
                assert s == group
    groups = [
        splits.annotator_split_group(annotator_key=f"a-{a:012x}") for a in range(4000)
    ]
    unseen = sum(g != "seen" for g in groups) / len(groups)
    assert 0.12 < unseen < 0.18


def test_split_keys_are_what_the_data_names():
    """External id (with its source) where there is one, else the public id:
    never a database id."""
    assert (
        splits.annotator_key(source="import", external_id="pam:P1", public_id="a-1")
        == "import:pam:P1"
    )
    assert splits.annotator_key(source="invite", external_id="", public_id="a-1") == (
        "a-1"
    )
    person = AnnotatorFactory(source="prolific", external_id="5f1c")
    assert person.split_key == "prolific:5f1c"


def test_engine_stores_the_split_and_it_never_moves_when_data_grows():
    study = StudyFactory(raters_per_image=3, quota_per_annotator=500)
    make_images(study, 12)
    first = [AnnotatorFactory() for _ in range(6)]
    rate_all(study, first)
    before = dict(Rating.objects.values_list("pk", "split"))
    assert before and all(s in splits.SPLITS for s in before.values())
    for r in Rating.objects.all():
        assert r.split == splits.split_assign(
            image_key=r.image.sha256, annotator_key=r.annotator.split_key
        )
    # More images and more annotators arrive; study raters grow too.
    make_images(study, 20, start=100)
    rate_all(study, first + [AnnotatorFactory() for _ in range(8)])
    after = dict(Rating.objects.values_list("pk", "split"))
    assert len(after) > len(before)
    assert {pk: after[pk] for pk in before} == before


def test_selector_reads_one_split_and_refuses_unknown_names():
    study = StudyFactory(raters_per_image=3, quota_per_annotator=500)
    make_images(study, 15)
    rate_all(study, [AnnotatorFactory() for _ in range(6)])
    counts = selectors.split_counts(study=study)
    assert sum(counts.values()) == Rating.objects.filter(study=study).count()
    for name in splits.SPLITS:
        qs = selectors.ratings_in_split(study=study, split=name)
        assert qs.count() == counts[name]
        assert all(r.split == name for r in qs)
    both = selectors.ratings_in_split(study=study, split=splits.TEST_SPLITS)
    assert both.count() == counts["test_seen"] + counts["test_unseen"]
    with pytest.raises(InvalidInput, match="unknown split"):
        selectors.ratings_in_split(study=study, split="holdout")


def test_excluded_annotators_ratings_leave_the_split():
    study = StudyFactory(raters_per_image=3, quota_per_annotator=500)
    make_images(study, 6)
    people = [AnnotatorFactory() for _ in range(3)]
    rate_all(study, people)
    total = sum(selectors.split_counts(study=study).values())
    services.annotator_set_status(annotator=people[0], status="excluded")
    assert sum(selectors.split_counts(study=study).values()) < total


def test_database_refuses_an_unknown_split():
    study = StudyFactory(raters_per_image=3)
    image = make_images(study, 1)[0]
    annotator = AnnotatorFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(
            study=study, image=image, annotator=annotator, score=3, split="holdout"
        )
