"""The five evaluation splits of a study, PAMELA's protocol.

* ``train``: seen annotators on training images;
* ``val_seen`` / ``test_seen``: seen annotators on images held out of training
  ("known people, new images");
* ``val_unseen`` / ``test_unseen``: every rating of annotators held out entirely
  ("new people").

Each rating's split is a pure function of keys the data itself carries: the
image's content hash (``Image.sha256``) and the annotator's id as the data names
it (``annotator_key``: the external id of an imported or Prolific rater, the
public id otherwise), drawn from a SHA-256 hash; never a database id, so the same
ratings get the same splits in any database and after any re-import (and the
same image or person falls on the same side in every study, so a version
trained across studies never tests on an image it trained on). It is stored on
the rating when the rating is written (``Rating.split``). Because the fractions
below are fixed and each item hashes on its own, nothing ever moves when data
grows: a new image or annotator only lands in its own bucket. Imported datasets
that publish their own splits (PAMELA) store those instead.

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


def _unit(kind: str, key: str) -> float:
    """A uniform number in [0, 1) from (kind, key), stable forever."""
    digest = hashlib.sha256(f"palate-split:{kind}:{key}".encode())
    return int.from_bytes(digest.digest()[:8], "big") / 2**64


def annotator_key(*, source: str, external_id: str, public_id: str) -> str:
    """The annotator as the data names them: ``<source>:<external id>`` where
    there is one (imported raters, Prolific), else their public id. The source is
    part of it because external ids are unique per source only."""
    return f"{source}:{external_id}" if external_id else public_id


def annotator_split_group(*, annotator_key: str) -> str:
    """``val_unseen``, ``test_unseen`` or ``"seen"`` for an annotator."""
    u = _unit("annotator", annotator_key)
    if u < ANNOTATOR_VAL_UNSEEN:
        return VAL_UNSEEN
    if u < ANNOTATOR_VAL_UNSEEN + ANNOTATOR_TEST_UNSEEN:
        return TEST_UNSEEN
    return "seen"


def image_split_group(*, image_key: str) -> str:
    """``train``, ``val_seen`` or ``test_seen``: where seen annotators' ratings of
    this image (its sha256) go."""
    u = _unit("image", image_key)
    if u < IMAGE_VAL_SEEN:
        return VAL_SEEN
    if u < IMAGE_VAL_SEEN + IMAGE_TEST_SEEN:
        return TEST_SEEN
    return TRAIN


def split_assign(*, image_key: str, annotator_key: str) -> str:
    """The split of one rating (pure; the same answer every time)."""
    group = annotator_split_group(annotator_key=annotator_key)
    if group != "seen":
        return group
    return image_split_group(image_key=image_key)


def split_validate(value: str) -> str:
    """``value`` if it names a split; ValueError with the valid names otherwise."""
    if value not in SPLITS:
        names = ", ".join(SPLITS)
        raise ValueError(f"unknown split {value!r}; expected one of {names}")
    return value
