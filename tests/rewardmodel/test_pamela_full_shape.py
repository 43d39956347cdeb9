"""PAMELA as a user with network meets it (issue 26): the card's five splits at
their exact sizes (50,222 / 6,551 / 926 / 9,735 / 2,470 ratings on 5,077 images
from 199 people) with an image PIL cannot load. The reader streams (bounded
memory), the import skips and reports the unreadable image instead of aborting.
Images are 8×8 PNGs so that the size is the card's, not the bytes."""

import io
import json
import tracemalloc

import pytest
from django.core.management import call_command

from annotation import selectors
from annotation.models import Annotator, Image
from rewardmodel.dataset_readers import records_read

from .pamela_fixture import (
    PAMELA_IMAGES,
    PAMELA_PEOPLE,
    PAMELA_SHAPE,
    pamela_full_shape,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pamela_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pamela-full")
    return root, pamela_full_shape(root)


def test_the_reader_streams_the_full_dataset(pamela_root):
    """Every row comes through, and the reader holds about one record batch:
    reading everything into a list (as before) peaked near 70 MB here."""
    root, written = pamela_root
    assert written["splits"] == PAMELA_SHAPE
    tracemalloc.start()
    try:
        counts = dict.fromkeys(PAMELA_SHAPE, 0)
        for record in records_read(str(root), layout="pamela", mapping={}):
            counts[record.split] += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counts == PAMELA_SHAPE
    assert peak < 10_000_000, f"peak {peak / 1e6:.1f} MB while reading"


@pytest.mark.django_db
def test_import_skips_and_reports_the_unreadable_image(pamela_root):
    root, written = pamela_root
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_ratings",
        "pamela",
        str(root),
        "--layout",
        "pamela",
        "--create",
        "--scale-min",
        "1",
        "--scale-max",
        "10",
        stdout=out,
        stderr=err,
    )
    result = json.loads(out.getvalue())
    lost = written["unreadable_ratings"]
    assert result["unreadable_images_skipped"] == 1
    assert result["unreadable_images"] == written["unreadable"] == ["img_00017.png"]
    assert result["ratings_skipped_unreadable_image"] == sum(lost.values()) > 0
    assert "img_00017.png" in err.getvalue() and "cannot be read" in err.getvalue()
    study = Image.objects.first().study
    assert selectors.split_counts(study=study) == {
        s: n - lost[s] for s, n in PAMELA_SHAPE.items()
    }
    assert result["ratings_created"] == sum(PAMELA_SHAPE.values()) - sum(lost.values())
    assert Image.objects.filter(study=study).count() == PAMELA_IMAGES - 1
    assert Annotator.objects.filter(source="import").count() == PAMELA_PEOPLE
