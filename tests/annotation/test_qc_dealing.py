"""The API deals attention checks and repeats on the rating page's schedule; a
check comes back to an annotator only after every check was shown to them; a
repeat keeps its gap (issue 23)."""

import random
from collections import Counter

import pytest
from django.test import Client

from annotation import services
from annotation.models import Assignment, Rating, StreamItem
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images, png_bytes
from tests.items import row_of
from tests.qc_clients import ApiAnnotator, _dwell, informed, run_bot

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def _study(*, n_images=40, checks=3, **config):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=n_images)
    make_images(study, n_images, start=study.pk * 1000)
    for i in range(checks):
        data = png_bytes(800_000 + study.pk * 10 + i)
        services.attention_check_create(study=study, data=data, expected_min=i + 1)
    services.quality_config_update(study=study, **config)
    return study


def _api(way, study, staff_user):
    """A token client (the plain-Django fast path) or a staff session (the DRF
    view); both must deal alike."""
    if way == "session":
        client = Client()
        client.force_login(staff_user)
        return ApiAnnotator(client, study), services.annotator_get_or_create_for_user(
            staff_user
        )
    annotator = join(AnnotatorFactory(), study)
    return ApiAnnotator.token_client(Client, annotator, study), annotator


WAYS = ["token-sql", "token-python", "session"]


@pytest.mark.parametrize("way", WAYS)
def test_the_api_deals_checks_and_repeats(way, settings, staff_user):
    settings.PALATE_SQL_ENGINE = way != "token-python"
    # Rates of one half: over 29 draws each, fewer than 3 checks (or repeats)
    # has a chance of about 1e-6 (at 0.3 it was 0.3 %, and CI once dealt 2).
    study = _study(n_images=30, attention_check_rate=0.5, repeat_rate=0.5, repeat_gap=3)
    api, annotator = _api(way, study, staff_user)
    run = run_bot(api, annotator, informed, dwell_ms=3000, max_items=1000)
    # To the end (204): every item dealt was shown and answered on the way.
    assert run.kinds["counted"] == 30
    assert run.kinds["attention"] >= 3 and run.kinds["repeat"] >= 3, run
    assert not StreamItem.objects.filter(annotator=annotator, status="pending").exists()
    assert run.items == sum(run.kinds.values())
    # Between the counted images, not only once they ran out.
    last = Rating.objects.filter(annotator=annotator).latest("created_at")
    between = StreamItem.objects.filter(
        annotator=annotator, answered_at__lt=last.created_at
    )
    assert between.filter(kind="attention").count() >= 2
    assert between.filter(kind="repeat").count() >= 2
    assert not run.paused and run.flags == []


@pytest.mark.parametrize("way", WAYS)
def test_items_are_due_one_rating_after_they_are_dealt(way, settings, staff_user):
    settings.PALATE_SQL_ENGINE = way != "token-python"
    study = _study(attention_check_rate=1.0)
    api, annotator = _api(way, study, staff_user)
    first = api.next()
    api.answer(first, 4)  # deals a check, due after the next rating
    second = api.next()
    assert second != first
    assert Rating.objects.filter(annotator=annotator).count() == 1
    api.answer(second, 4)
    third = api.next()  # now the check: no Rating behind it
    item = StreamItem.objects.get(annotator=annotator, shown_at__isnull=False)
    assert item.kind == "attention" and item.due_after == 1
    assert api.answer(third, item.check_item.expected_min) == 201
    item.refresh_from_db()
    assert (item.status, item.passed) == ("answered", True)
    assert Rating.objects.filter(annotator=annotator).count() == 2


@pytest.mark.parametrize("way", ["token-sql", "token-python"])
def test_no_check_comes_back_before_every_check_was_shown(way, settings, staff_user):
    settings.PALATE_SQL_ENGINE = way == "token-sql"
    study = _study(n_images=30, checks=3, attention_check_rate=1.0)
    api, annotator = _api(way, study, staff_user)
    run_bot(api, annotator, informed, dwell_ms=3000, max_items=60)
    shown = list(
        StreamItem.objects.filter(annotator=annotator, kind="attention")
        .exclude(shown_at=None)
        .order_by("shown_at", "pk")
        .values_list("check_item_id", flat=True)
    )
    assert len(shown) >= 20
    seen = Counter()
    for check_id in shown:
        # Shown k + 1 times only once every check was shown k times.
        assert seen[check_id] == min(seen[c] for c in set(shown)), shown
        seen[check_id] += 1


@pytest.mark.parametrize("way", ["token-sql", "token-python"])
def test_repeats_keep_their_gap(way, settings, staff_user):
    settings.PALATE_SQL_ENGINE = way == "token-sql"
    study = _study(n_images=30, checks=0, repeat_rate=0.5, repeat_gap=4)
    api, annotator = _api(way, study, staff_user)
    gaps = []
    while (token := api.next()) is not None:
        item = row_of(token)
        if isinstance(item, StreamItem):
            rated = Rating.objects.filter(annotator=annotator).count()
            position = Rating.objects.filter(
                annotator=annotator, pk__lte=item.source_rating_id
            ).count()
            gaps.append((rated, rated - position))
        _dwell(annotator.pk, 3000)
        assert api.answer(token, informed(random.Random(0), token)) == 201
    assert len(gaps) >= 3
    # Repeats still pending at the end come before it, with a shorter gap.
    assert not StreamItem.objects.filter(annotator=annotator, status="pending").exists()
    # Before the end (30 rated), every repeat came at least 4 ratings later.
    assert all(gap >= 4 for rated, gap in gaps if rated < 30), gaps


@pytest.mark.parametrize("way", WAYS)
def test_an_item_shows_the_lease_window_of_the_image_behind_it(
    way, settings, staff_user
):
    """The counted image after an uncounted item keeps the lease it got while
    the item was shown; the item shows that same window, so an old
    ``leased_at`` does not mark the image after an item as counted."""
    settings.PALATE_SQL_ENGINE = way != "token-python"
    study = _study(attention_check_rate=1.0)
    api, annotator = _api(way, study, staff_user)
    url = f"/api/v1/studies/{study.pk}/assignments/next/"
    for _ in range(2):
        api.answer(api.next(), 4)
    check = api.client.post(url).json()
    item = row_of(check["id"])
    assert isinstance(item, StreamItem)
    api.answer(check["id"], item.check_item.expected_min)
    after = api.client.post(url).json()
    assert isinstance(row_of(after["id"]), Assignment)
    window = lambda d: (d["leased_at"], d["expires_at"])  # noqa: E731
    assert window(check) == window(after)
