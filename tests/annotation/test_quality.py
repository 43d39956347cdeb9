"""Quality control: uncounted items never count, each flag fires on a crafted
annotator and not on a normal one, alpha against a published value, pause keeps
the image."""

import math
from datetime import timedelta

import pytest
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from annotation import selectors, services
from annotation.models import (
    Annotator,
    AnnotatorQuality,
    Assignment,
    Image,
    ModerationEvent,
    Rating,
    StreamItem,
)
from core.exceptions import Conflict
from tests.factories import (
    AnnotatorFactory,
    StudyFactory,
    join,
    joined,
    make_images,
    png_bytes,
)
from tests.items import on_screen, picture_url, rate_url, row_of, token_of

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def rate_one(study, annotator, score, *, seconds=3.0, now=None):
    now = now or timezone.now()
    join(annotator, study)
    lease = services.assignment_claim(annotator=annotator, study=study, now=now)[0]
    rating, _ = services.rating_submit(
        assignment_id=lease.pk,
        annotator=annotator,
        score=score,
        now=now + timedelta(seconds=seconds),
    )
    return rating


def counters():
    return list(Image.objects.order_by("pk").values_list("rating_count", "lease_count"))


def quality(annotator, study):
    return AnnotatorQuality.objects.get(annotator=annotator, study=study)


# --- uncounted items ------------------------------------------------------------


def test_attention_check_is_shown_answered_and_never_counted(client):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=10)
    make_images(study, 4)
    check = services.attention_check_create(
        study=study, data=png_bytes(1), expected_min=2, instruction="Please press 2."
    )
    services.quality_config_update(study=study, attention_check_rate=1.0)
    annotator = joined(client, study)
    page_url = reverse("annotation:rate", args=[study.slug])
    body = client.get(page_url).content.decode()
    client.post(rate_url(study, on_screen(body)), {"score": 5})
    # Dealt by that rating: preloaded behind the next counted image...
    item = StreamItem.objects.get(annotator=annotator, kind="attention")
    body = client.get(page_url).content.decode()
    assert isinstance(row_of(on_screen(body)), Assignment)
    assert f'class="preload" src="{picture_url(item)}"' in body
    client.post(rate_url(study, on_screen(body)), {"score": 5})
    # ...and shown after it, under opaque names; the staff note is not shown.
    body = client.get(page_url).content.decode()
    before = counters()  # the page holds its leases (shown + preloaded) as usual
    assert on_screen(body) == token_of(item)
    assert picture_url(item) in body
    assert check.file.url not in body and "Please press 2." not in body
    r = client.post(rate_url(study, token_of(item)), {"score": 6}, **HTMX)
    assert r.status_code == 200
    item.refresh_from_db()
    assert (item.status, item.score, item.passed) == ("answered", 6, False)
    assert Rating.objects.filter(annotator=annotator).count() == 2
    assert counters() == before  # no slot, lease or rating moved
    q = quality(annotator, study)
    assert (q.checks_total, q.checks_failed, q.n_ratings) == (1, 1, 2)
    # Progress counts only real images.
    assert selectors.annotator_progress(annotator=annotator, study=study)[0] == 2


def test_repeat_is_shown_later_and_never_counted(client):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=10)
    make_images(study, 5)
    services.quality_config_update(study=study, repeat_rate=1.0, repeat_gap=2)
    annotator = joined(client, study)
    first = rate_one(study, annotator, 3)
    item = StreamItem.objects.get(annotator=annotator, source_rating=first)
    assert (item.kind, item.image_id, item.due_after) == ("repeat", first.image_id, 3)
    # Not due after two or three ratings...
    assert services.stream_item_next(annotator=annotator, study=study, rated=3) is None
    rate_one(study, annotator, 5)
    rate_one(study, annotator, 6)
    rate_one(study, annotator, 2)
    # ...shown after the fourth, on the rating page: the same image under a new
    # name (never the file's, nor the first showing's).
    body = client.get(reverse("annotation:rate", args=[study.slug])).content.decode()
    before = counters()
    ratings_before = Rating.objects.count()
    assert on_screen(body) == token_of(item)
    assert picture_url(item) in body.split('id="current-image"')[1][:300]
    assert first.image.file.url not in body
    services.stream_item_answer(item_id=item.pk, annotator=annotator, score=4)
    assert counters() == before
    assert Rating.objects.count() == ratings_before
    assert Image.objects.get(pk=first.image_id).rating_count == 1
    q = quality(annotator, study)
    assert q.retest_sums[0] == 1 and q.retest_abs_diff == 1
    # Answering again the same is a no-op; another answer is refused.
    services.stream_item_answer(item_id=item.pk, annotator=annotator, score=4)
    with pytest.raises(Conflict):
        services.stream_item_answer(item_id=item.pk, annotator=annotator, score=2)


def test_pending_items_are_shown_before_finishing(client):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=2)
    make_images(study, 2)
    services.quality_config_update(study=study, repeat_rate=1.0, repeat_gap=50)
    annotator = joined(client, study)
    rate_one(study, annotator, 3)
    rate_one(study, annotator, 4)
    url = reverse("annotation:rate", args=[study.slug])
    for item in StreamItem.objects.filter(annotator=annotator).order_by("pk"):
        body = client.get(url).content.decode()
        assert on_screen(body) == token_of(item)
        client.post(rate_url(study, token_of(item)), {"score": 4})
    assert client.get(url).status_code == 302  # now done
    assert not StreamItem.objects.filter(status="pending").exists()


# --- flags --------------------------------------------------------------------------


@pytest.fixture
def qc_study():
    study = StudyFactory(raters_per_image=5, quota_per_annotator=40)
    make_images(study, 30)
    services.quality_config_update(
        study=study, min_evidence=10, min_checks=3, straightline_run=8
    )
    return study


def test_too_fast_flag(qc_study):
    fast, normal = AnnotatorFactory(), AnnotatorFactory()
    for i in range(12):
        rate_one(qc_study, fast, 1 + i % 7, seconds=0.3)
        rate_one(qc_study, normal, 1 + i % 7, seconds=4)
    assert quality(fast, qc_study).flags == ["too_fast"]
    assert quality(normal, qc_study).flags == []
    assert 250 <= selectors_median(fast, qc_study) <= 500


def selectors_median(annotator, study):
    from annotation.quality.services.quality import time_median_ms

    return time_median_ms(quality(annotator, study).time_hist)


def test_straight_lining_flag(qc_study):
    liner, normal = AnnotatorFactory(), AnnotatorFactory()
    for i in range(10):
        rate_one(qc_study, liner, 4)
        rate_one(qc_study, normal, 4 if i % 2 else 5)
    assert quality(liner, qc_study).flags == ["straight_lining"]
    assert quality(normal, qc_study).flags == []


def test_failed_checks_flag_and_auto_pause(
    qc_study, django_capture_on_commit_callbacks
):
    check = services.attention_check_create(
        study=qc_study, data=png_bytes(7), expected_min=2
    )
    careless, careful = AnnotatorFactory(), AnnotatorFactory()
    services.quality_config_update(
        study=qc_study, auto_pause=True, hard_check_failures=3
    )

    def answer(annotator, score):
        item = StreamItem.objects.create(
            study=qc_study,
            annotator=annotator,
            kind="attention",
            check_item=check,
            due_after=0,
        )
        services.stream_item_answer(item_id=item.pk, annotator=annotator, score=score)

    with django_capture_on_commit_callbacks(execute=True):
        for score in (6, 2, 5, 7):  # 3 of 4 failed
            answer(careless, score)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(4):
            answer(careful, 2)
    assert quality(careless, qc_study).flags == ["failed_checks"]
    assert quality(careful, qc_study).flags == []
    careless.refresh_from_db()
    careful.refresh_from_db()
    assert (careless.status, careful.status) == ("paused", "active")
    event = ModerationEvent.objects.get()
    assert (event.annotator, event.action, event.user) == (careless, "auto_pause", None)


def _consensus_study():
    """10 images rated by 3 annotators who agree (score = image rank)."""
    study = StudyFactory(raters_per_image=5, quota_per_annotator=40)
    images = make_images(study, 12)
    services.quality_config_update(study=study, min_evidence=10)
    rank = {img.pk: 1 + i % 7 for i, img in enumerate(images)}
    for _ in range(3):
        a = join(AnnotatorFactory(), study)
        for _ in range(12):
            lease = services.assignment_claim(annotator=a, study=study)[0]
            services.rating_submit(
                assignment_id=lease.pk,
                annotator=a,
                score=rank[lease.image_id],
                now=lease.leased_at + timedelta(seconds=3),
            )
    return study, rank


def test_low_agreement_flag():
    study, rank = _consensus_study()
    contrarian, agreeable = AnnotatorFactory(), AnnotatorFactory()
    for a, score in ((contrarian, lambda r: 8 - r), (agreeable, lambda r: r)):
        join(a, study)
        for _ in range(12):
            lease = services.assignment_claim(annotator=a, study=study)[0]
            services.rating_submit(
                assignment_id=lease.pk,
                annotator=a,
                score=score(rank[lease.image_id]),
                now=lease.leased_at + timedelta(seconds=3),
            )
    assert quality(contrarian, study).flags == ["low_agreement"]
    assert quality(agreeable, study).flags == []
    assert quality(agreeable, study).loo_sums[0] == 12


def test_low_retest_flag(qc_study):
    erratic, steady = AnnotatorFactory(), AnnotatorFactory()
    for a, second in ((erratic, lambda s: 8 - s), (steady, lambda s: s)):
        for i in range(6):
            rating = rate_one(qc_study, a, 1 + i)
            item = StreamItem.objects.create(
                study=qc_study,
                annotator=a,
                kind="repeat",
                image_id=rating.image_id,
                source_rating=rating,
                due_after=0,
            )
            services.stream_item_answer(
                item_id=item.pk, annotator=a, score=second(rating.score)
            )
    assert quality(erratic, qc_study).flags == ["low_retest"]
    assert quality(steady, qc_study).flags == []
    retest = selectors.study_retest(study=qc_study)
    assert retest["pairs"] == 12
    # steady orders its 15 pairs as before, erratic reverses all 15.
    assert retest["ceiling_pairwise"] == pytest.approx(0.5)


# --- agreement ----------------------------------------------------------------------


def test_krippendorff_alpha_matches_published_example():
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the
    4 observers x 12 units example with missing values: interval alpha = 0.849."""
    table = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    study = StudyFactory(raters_per_image=4, scale_min=1, scale_max=5, scale_labels=[])
    images = make_images(study, 12)
    for i, img in enumerate(images):
        img.domain = "odd" if i % 2 else "even"
        img.save(update_fields=["domain"])
    for row in table:
        a = AnnotatorFactory()
        for img, score in zip(images, row, strict=True):
            if score is not None:
                # Written directly (no engine): keep the image's counter true.
                Rating.objects.create(study=study, image=img, annotator=a, score=score)
                Image.objects.filter(pk=img.pk).update(
                    rating_count=F("rating_count") + 1
                )
    result = selectors.study_alpha(study=study)
    assert round(result["alpha"], 3) == 0.849
    assert [d for d, _, _ in result["by_domain"]] == ["even", "odd"]
    assert all(a is None or -1 <= a <= 1 for _, a, _ in result["by_domain"])
    # Invalid ratings are left out (unit 10's three 5s: it drops out).
    Rating.objects.filter(score=5).update(is_valid=False)
    Image.objects.filter(pk=images[9].pk).update(rating_count=0)
    assert not math.isclose(selectors.study_alpha(study=study)["alpha"], 0.849)


# --- pause ----------------------------------------------------------------------


def test_pause_keeps_the_image_past_its_lease(client):
    study = StudyFactory(raters_per_image=3, quota_per_annotator=10, lease_seconds=60)
    make_images(study, 3)
    joined(client, study)
    url = reverse("annotation:rate", args=[study.slug])
    body = client.get(url).content.decode()
    token = on_screen(body)
    shown = row_of(token).pk
    assert (
        client.post(reverse("annotation:pause", args=[study.slug]), **HTMX).status_code
        == 204
    )
    lease = Assignment.objects.get(pk=shown)
    hold = lease.expires_at - timezone.now()
    assert hold > timedelta(seconds=services.PAUSE_HOLD_SECONDS - 30)
    # Later than a normal lease: a sweep then does not take it away.
    later = timezone.now() + timedelta(seconds=study.lease_seconds * 3)
    services.lease_expire(now=later)
    assert Assignment.objects.get(pk=shown).status == "leased"
    r = client.post(reverse("annotation:resume", args=[study.slug]))
    assert r.status_code == 302
    lease.refresh_from_db()
    assert lease.expires_at - timezone.now() <= timedelta(seconds=study.lease_seconds)
    body = client.get(url).content.decode()
    assert on_screen(body) == token  # the same image


def test_moderation_refuses_impossible_transitions():
    a = AnnotatorFactory()
    with pytest.raises(Conflict, match="cannot resume"):
        services.annotator_moderate(annotator=a, action="resume")
    services.annotator_moderate(annotator=a, action="exclude_all")
    with pytest.raises(Conflict, match="cannot pause"):
        services.annotator_moderate(annotator=a, action="pause")
    assert Annotator.objects.get(pk=a.pk).status == "excluded"
    assert ModerationEvent.objects.count() == 1
