"""The blind paired test: random order, uncounted, outcome recorded."""

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation import selectors as ann_selectors
from annotation.models import Assignment, Image, Rating, StreamItem
from core.exceptions import Conflict
from steering import blind
from steering.models import Candidate, Optimization, OptimizationRound, PairedTest
from tests.factories import StudyFactory, joined, make_images
from tests.items import on_screen, picture_url, rate_url, row_of

pytestmark = pytest.mark.django_db


def _done_run(study, annotator, base_image, best_image, **kw) -> Optimization:
    """A finished run whose round 0 rendered ``base_image`` and whose kept best
    is ``best_image`` (written directly: the loop itself is tested elsewhere)."""
    opt = Optimization.objects.create(
        study=study,
        annotator=annotator,
        base_prompt="a cat",
        proposer="beam",
        backend="procedural",
        rounds=1,
        per_round=1,
        max_images=2,
        status=kw.get("status", "done"),
        finished_at=timezone.now() if kw.get("status", "done") == "done" else None,
    )
    r0 = OptimizationRound.objects.create(
        optimization=opt,
        index=0,
        best_prompt="a cat",
        best_personal=1.0,
        best_population=1.0,
    )
    Candidate.objects.create(
        optimization=opt,
        round=r0,
        prompt="a cat",
        image=base_image,
        image_ids=[base_image.pk],
        personal=1.0,
        population=1.0,
    )
    best_prompt = "a cat, oil painting" if best_image != base_image else "a cat"
    r1 = OptimizationRound.objects.create(
        optimization=opt,
        index=1,
        best_prompt=best_prompt,
        best_personal=2.0,
        best_population=1.5,
        improved=best_image != base_image,
    )
    if best_image != base_image:
        Candidate.objects.create(
            optimization=opt,
            round=r1,
            prompt=best_prompt,
            image=best_image,
            image_ids=[best_image.pk],
            personal=2.0,
            population=1.5,
        )
    return opt


@pytest.fixture
def setup(client):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=10)
    make_images(study, 6)
    annotator = joined(client, study)
    elsewhere = StudyFactory(status="closed")
    base, best = make_images(elsewhere, 2, start=500)
    return study, annotator, base, best


def test_order_is_drawn_at_random(setup):
    study, annotator, base, best = setup
    orders = []
    for _ in range(24):
        opt = _done_run(study, annotator, base, best)
        test = blind.paired_test_send(optimization=opt)
        first = StreamItem.objects.get(
            pk=min(test.base_item_id, test.optimised_item_id)
        )
        # The item created first is the one shown first (same due point, by id).
        assert first.image_id == (best.pk if test.optimised_first else base.pk)
        orders.append(test.optimised_first)
    assert 0 < sum(orders) < len(orders)  # both orders occur (p of not: 2^-23)


@pytest.mark.parametrize("optimised_first", [True, False])
def test_shown_in_the_stream_uncounted_and_outcome_recorded(
    client, setup, optimised_first
):
    study, annotator, base, best = setup
    opt = _done_run(study, annotator, base, best)
    test = blind.paired_test_send(optimization=opt, optimised_first=optimised_first)
    counters = lambda: list(  # noqa: E731
        Image.objects.order_by("pk").values_list("rating_count", "lease_count")
    )
    page_url = reverse("annotation:rate", args=[study.slug])
    shown = []
    scores = {best.pk: 6, base.pk: 3}
    counted = 0
    # Uncounted items come after the next counted rating (the page has already
    # preloaded the image after the one on screen), then one after the other.
    while len(shown) < 2:
        body = client.get(page_url).content.decode()
        item = row_of(on_screen(body))
        if isinstance(item, Assignment):
            assert not shown, "the pair is shown one right after the other"
            client.post(rate_url(study, on_screen(body)), {"score": 4})
            counted += 1
            continue
        before = counters()
        assert picture_url(item) in body and item.image.file.url not in body
        shown.append(item.image_id)
        r = client.post(
            rate_url(study, on_screen(body)), {"score": scores[item.image_id]}
        )
        assert r.status_code in (200, 302, 303)
        assert counters() == before  # no slot, lease or rating moved
    assert counted == 1
    assert shown == ([best.pk, base.pk] if optimised_first else [base.pk, best.pk])
    # Not counted: no Rating for them, progress moved only with the counted one.
    assert Rating.objects.filter(annotator=annotator).count() == counted
    progress = ann_selectors.annotator_progress(annotator=annotator, study=study)
    assert progress[0] == counted
    test = blind.paired_test_refresh(test=test)
    assert (test.status, test.outcome) == ("answered", "optimised")
    assert (test.base_score, test.optimised_score) == (3, 6)
    assert test.answered_at is not None


def test_tie_skip_and_refusals(client, setup, staff_user):
    study, annotator, base, best = setup
    opt = _done_run(study, annotator, base, best)
    test = blind.paired_test_send(optimization=opt, optimised_first=False)
    with pytest.raises(Conflict, match="still waiting"):
        blind.paired_test_send(optimization=opt)
    assert blind.paired_test_refresh(test=test).status == "pending"
    from annotation import services as ann

    ann.stream_item_answer(item_id=test.base_item_id, annotator=annotator, score=4)
    ann.stream_item_skip(item_id=test.optimised_item_id, annotator=annotator)
    test = blind.paired_test_refresh(test=test)
    assert (test.status, test.outcome) == ("skipped", "")
    test2 = blind.paired_test_send(optimization=opt)
    for item_id in (test2.base_item_id, test2.optimised_item_id):
        ann.stream_item_answer(item_id=item_id, annotator=annotator, score=5)
    assert blind.paired_test_refresh(test=test2).outcome == "tie"
    # The page shows the outcome.
    client.force_login(staff_user)
    html = client.get(f"/steering/runs/{opt.pk}/").content.decode()
    assert 'data-outcome="tie"' in html and "Rated the same" in html
    # Nothing to compare, or not finished: refused, nothing written.
    same = _done_run(study, annotator, base, base)
    with pytest.raises(Conflict, match="stayed the best"):
        blind.paired_test_send(optimization=same)
    running = _done_run(study, annotator, base, best, status="running")
    with pytest.raises(Conflict, match="not finished"):
        blind.paired_test_send(optimization=running)
    assert PairedTest.objects.count() == 2


def test_send_from_the_page(client, setup, staff_user):
    study, annotator, base, best = setup
    opt = _done_run(study, annotator, base, best)
    client.force_login(staff_user)
    html = client.get(f"/steering/runs/{opt.pk}/").content.decode()
    assert 'id="send-paired-test"' in html
    r = client.post(f"/steering/runs/{opt.pk}/paired-test/")
    assert r.status_code == 302
    test = PairedTest.objects.get()
    assert test.created_by == staff_user and test.status == "pending"
    html = client.get(f"/steering/runs/{opt.pk}/").content.decode()
    assert 'id="send-paired-test"' not in html  # one waiting test at a time
    assert 'data-status="pending"' in html and 'hx-trigger="every 2s"' in html
