"""The five evaluation splits of a study, PAMELA's protocol.

* ``train``: seen annotators on training images;
* ``val_seen`` / ``test_seen``: seen annotators on images held out of training
  ("known people, new images");
* ``val_unseen`` / ``test_unseen``: every rating of annotators held out entirely
  ("new people").

Each rating's split is a pure function of (study, image, annotator), drawn from a
hash salted per study, and it is stored on the rating when the rating is written
(``Rating.split``). Because the fractions below are fixed and each item hashes on
its own, nothing ever moves when data grows: a new image or annotator only lands in
its own bucket. Imported datasets that publish their own splits (PAMELA) store
those instead.

This module depends on nothing else in the project, so any app can import it.
"""

import hashlib

TRAIN = "train"
VAL_SEEN = "val_seen"
VAL_UNSEEN = "val_unseen"
TEST_SEEN = "test_seen"
TEST_UNSEEN = "test_unseen"

SPLITS = (TRAIN, VAL_SEEN, VAL_UNSEEN, TEST_SEEN, TEST_UNSEEN)
SEEN_SPLITS = (VAL_SEEN, TEST_SEEN)
UNSEEN_SPLITS = (VAL_UNSEEN, TEST_UNSEEN)
VALIDATION_SPLITS = (VAL_SEEN, VAL_UNSEEN)
TEST_SPLITS = (TEST_SEEN, TEST_UNSEEN)

CHOICES = [
    (TRAIN, "Train"),
    (VAL_SEEN, "Validation, seen annotators"),
    (VAL_UNSEEN, "Validation, unseen annotators"),
    (TEST_SEEN, "Test, seen annotators"),
    (TEST_UNSEEN, "Test, unseen annotators"),
]

# Fixed forever: changing them would move stored items' siblings between splits.
# Close to PAMELA's published shape (about 15% of annotators held out; of the
# remaining ratings about 72% train, 11% validation, 17% test).
ANNOTATOR_VAL_UNSEEN = 0.05
ANNOTATOR_TEST_UNSEEN = 0.10
IMAGE_VAL_SEEN = 0.11
IMAGE_TEST_SEEN = 0.17


def _unit(study_id: int, kind: str, identity: int | str) -> float:
    """A uniform number in [0, 1) from (study, kind, identity), stable forever."""
    digest = hashlib.sha256(f"palate-split:{study_id}:{kind}:{identity}".encode())
    return int.from_bytes(digest.digest()[:8], "big") / 2**64


def annotator_split_group(*, study_id: int, annotator_id: int) -> str:
    """``val_unseen``, ``test_unseen`` or ``"seen"`` for an annotator in a study."""
    u = _unit(study_id, "annotator", annotator_id)
    if u < ANNOTATOR_VAL_UNSEEN:
        return VAL_UNSEEN
    if u < ANNOTATOR_VAL_UNSEEN + ANNOTATOR_TEST_UNSEEN:
        return TEST_UNSEEN
    return "seen"


def image_split_group(*, study_id: int, image_id: int) -> str:
    """``train``, ``val_seen`` or ``test_seen``: where seen annotators' ratings of
    this image go."""
    u = _unit(study_id, "image", image_id)
    if u < IMAGE_VAL_SEEN:
        return VAL_SEEN
    if u < IMAGE_VAL_SEEN + IMAGE_TEST_SEEN:
        return TEST_SEEN
    return TRAIN


def split_assign(*, study_id: int, image_id: int, annotator_id: int) -> str:
    """The split of one rating (pure; the same answer every time)."""
    group = annotator_split_group(study_id=study_id, annotator_id=annotator_id)
    if group != "seen":
        return group
    return image_split_group(study_id=study_id, image_id=image_id)


def split_validate(value: str) -> str:
    """``value`` if it names a split; ValueError with the valid names otherwise."""
    if value not in SPLITS:
        names = ", ".join(SPLITS)
        raise ValueError(f"unknown split {value!r}; expected one of {names}")
    return value
