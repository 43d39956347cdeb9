"""The annotator pages through Django's test client: the no-JavaScript form path,
the htmx fragments, joining, errors and double submission."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotation import services
from annotation.engine.item_tokens import ASSIGNMENT, MEDIA, item_resolve, item_token
from annotation.models import (
    Annotator,
    Assignment,
    Participation,
    Rating,
    Study,
)
from tests.factories import StudyFactory, join, joined, make_images, rate_image

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def open_study(db):
    study = StudyFactory(
        raters_per_image=3,
        quota_per_annotator=4,
        instructions="Rate **your** taste. <script>alert(1)</script>",
        consent_text="I agree to *take part*.",
    )
    make_images(study, 6)
    return study


def join_url(study, **extra):
    params = "&".join(f"{k}={v}" for k, v in {"t": study.invite_token, **extra}.items())
    return reverse("annotation:join", args=[study.slug]) + "?" + params


def current_assignment(html: str) -> str:
    """The opaque token of the item on screen."""
    return re.search(r'data-assignment="([A-Za-z0-9_-]+)"', html).group(1)


def test_invite_link_shows_consent_and_creates_no_account_on_get(client, open_study):
    r = client.get(join_url(open_study))
    assert r.status_code == 200
    body = r.content.decode()
    assert "<em>take part</em>" in body
    assert 'name="agree"' in body
    assert Annotator.objects.count() == 0


def test_wrong_token_is_a_friendly_404(client, open_study):
    r = client.get(reverse("annotation:join", args=[open_study.slug]) + "?t=nope")
    assert r.status_code == 404
    assert "This link is not valid" in r.content.decode()


def test_consent_must_be_ticked(client, open_study):
    r = client.post(
        reverse("annotation:join", args=[open_study.slug]),
        {"t": open_study.invite_token},
    )
    assert r.status_code == 200
    assert "Please tick the box" in r.content.decode()
    assert Annotator.objects.count() == 0


def test_join_consent_instructions_then_rating(client, open_study):
    r = client.post(
        reverse("annotation:join", args=[open_study.slug]),
        {"t": open_study.invite_token, "agree": "on"},
    )
    assert r.status_code == 302
    annotator = Annotator.objects.get()
    assert annotator.source == "invite" and annotator.external_id == ""
    p = Participation.objects.get(annotator=annotator, study=open_study)
    assert p.consented_at is not None
    # First stop: the instructions, rendered from Markdown and sanitised.
    r = client.get(reverse("annotation:rate", args=[open_study.slug]))
    assert r.status_code == 302 and r.url.endswith("/instructions")
    body = client.get(r.url).content.decode()
    assert "<strong>your</strong>" in body
    assert "<script>" not in body
    client.post(reverse("annotation:start", args=[open_study.slug]))
    r = client.get(reverse("annotation:rate", args=[open_study.slug]))
    assert r.status_code == 200
    body = r.content.decode()
    assert body.count('name="score"') == 7
    assert "0 of 4 rated" in body
    # The next image is preloaded: two leases, two image URLs on the page.
    leases = Assignment.objects.filter(annotator=annotator, status="leased")
    assert leases.count() == 2
    for lease in leases:  # under opaque names, never the file's
        media = item_token(kind=ASSIGNMENT, pk=lease.pk, purpose=MEDIA)
        assert reverse("media_item", args=[media]) in body
        assert lease.image.file.url not in body
    assert 'class="preload"' in body
    # Returning with the same link in the same browser continues, no new account.
    r = client.get(join_url(open_study))
    assert r.status_code == 302 and r.url.endswith(f"/s/{open_study.slug}/")
    assert Annotator.objects.count() == 1


def test_demographics_asked_per_study_and_stored(client, open_study):
    open_study.demographics_fields = ["age_range", "country"]
    open_study.save()
    body = client.get(join_url(open_study)).content.decode()
    assert 'name="age_range"' in body and 'name="country"' in body
    assert 'name="gender"' not in body
    client.post(
        reverse("annotation:join", args=[open_study.slug]),
        {
            "t": open_study.invite_token,
            "agree": "on",
            "age_range": "25-34",
            "country": "Portugal",
            "gender": "woman",  # not asked by this study: ignored
        },
    )
    assert Annotator.objects.get().demographics == {
        "age_range": "25-34",
        "country": "Portugal",
    }


def test_prolific_link_stores_ids_and_same_pid_continues(client, open_study):
    ids = {"PROLIFIC_PID": "5f1a2b3c", "STUDY_ID": "st-1", "SESSION_ID": "se-1"}
    body = client.get(join_url(open_study, **ids)).content.decode()
    assert 'value="5f1a2b3c"' in body  # carried through the consent form
    client.post(
        reverse("annotation:join", args=[open_study.slug]),
        {"t": open_study.invite_token, "agree": "on", **ids},
    )
    annotator = Annotator.objects.get()
    assert (annotator.source, annotator.external_id) == ("prolific", "5f1a2b3c")
    p = Participation.objects.get(annotator=annotator)
    assert (p.external_study_id, p.external_session_id) == ("st-1", "se-1")
    # The same PID from a fresh browser is the same annotator. Opening the link
    # (a GET) signs nobody in; one click on Continue (a POST) does.
    other = Client()
    r = other.get(join_url(open_study, **ids))
    assert r.status_code == 200 and ">Continue<" in r.content.decode()
    assert "_auth_user_id" not in other.session
    r = other.post(
        reverse("annotation:join", args=[open_study.slug]),
        {"t": open_study.invite_token, **ids},
    )
    assert r.status_code == 302
    assert other.session["_auth_user_id"] == str(annotator.user_id)
    assert Annotator.objects.count() == 1


def test_no_js_rating_posts_and_redirects(client, open_study):
    annotator = joined(client, open_study)
    r = client.get(reverse("annotation:rate", args=[open_study.slug]))
    a = current_assignment(r.content.decode())
    r = client.post(
        reverse("annotation:item_rate", args=[open_study.slug, a]), {"score": "5"}
    )
    assert r.status_code == 303 and r.url.endswith(f"/s/{open_study.slug}/")
    rating = Rating.objects.get(annotator=annotator)
    assert (rating.assignment_id, rating.score) == (item_resolve(a)[1], 5)
    body = client.get(r.url).content.decode()
    assert "1 of 4 rated" in body
    assert current_assignment(body) != a


def test_no_js_skip(client, open_study):
    annotator = joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    r = client.post(reverse("annotation:item_skip", args=[open_study.slug, a]))
    assert r.status_code == 303
    assert Assignment.objects.get(pk=item_resolve(a)[1]).status == "skipped"
    assert not Rating.objects.filter(annotator=annotator).exists()


def test_htmx_submit_returns_next_fragment(client, open_study):
    joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    r = client.post(
        reverse("annotation:item_rate", args=[open_study.slug, a]),
        {"score": "3"},
        **HTMX,
    )
    assert r.status_code == 200
    body = r.content.decode()
    assert body.lstrip().startswith('<section id="rater"')
    assert "<html" not in body
    assert "1 of 4 rated" in body
    assert current_assignment(body) != a


def test_double_submit_records_one_rating_and_shows_the_same_next(client, open_study):
    annotator = joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    url = reverse("annotation:item_rate", args=[open_study.slug, a])
    first = client.post(url, {"score": "6"}, **HTMX).content.decode()
    second = client.post(url, {"score": "6"}, **HTMX).content.decode()
    assert Rating.objects.filter(annotator=annotator).count() == 1
    assert current_assignment(first) == current_assignment(second)
    # A different score on the same image is refused, politely, and changes nothing.
    third = client.post(url, {"score": "2"}, **HTMX)
    assert third.status_code == 200
    assert "ratings cannot be changed" in third.content.decode()
    assert Rating.objects.get(annotator=annotator).score == 6


# The first rating's round trip, exactly, per backend. PostgreSQL: session,
# user, annotator, study, then the rating and the next leases with the progress
# one statement each (palate_submit, palate_claim), and what is left around them.
# SQLite (the Python path): the annotator's status, the assignment, the image,
# the rating, quality control (statistics row created on a first rating, the
# study's settings), the claim, the progress and the uncounted-item check:
# exactly that many, besides the picker's reads of the images. Those depend on
# where the random start falls (a level, then a window each way round), so they
# are bounded, not counted: two levels here, at most three reads each.
ROUND_TRIP_QUERIES = {"postgresql": 10, "sqlite": 30}
PICKER_READS_MAX = {"postgresql": 0, "sqlite": 6}  # PostgreSQL: inside palate_claim


def test_rating_round_trip_query_count(client, open_study):
    joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    url = reverse("annotation:item_rate", args=[open_study.slug, a])
    with CaptureQueriesContext(connection) as ctx:
        r = client.post(url, {"score": "4"}, **HTMX)
    assert r.status_code == 200
    sql = [q["sql"] for q in ctx.captured_queries]
    picker = [q for q in sql if q.startswith("SELECT i.")]
    assert len(sql) - len(picker) == ROUND_TRIP_QUERIES[connection.vendor], sql
    assert len(picker) <= PICKER_READS_MAX[connection.vendor], picker


def test_reaching_quota_shows_completion_code(client, open_study):
    open_study.completion_url = (
        "https://app.prolific.com/submissions/complete?cc={code}"
    )
    open_study.completion_code = "C0DE42"
    open_study.save()
    annotator = joined(client, open_study)
    last = None
    for _ in range(open_study.quota_per_annotator):
        body = client.get(reverse("annotation:rate", args=[open_study.slug]))
        a = current_assignment(body.content.decode())
        last = client.post(
            reverse("annotation:item_rate", args=[open_study.slug, a]),
            {"score": "4"},
            **HTMX,
        )
    assert last["HX-Redirect"].endswith(f"/s/{open_study.slug}/done")
    assert Rating.objects.filter(annotator=annotator).count() == 4
    r = client.get(reverse("annotation:rate", args=[open_study.slug]))
    assert r.status_code == 302 and r.url.endswith("/done")
    body = client.get(r.url).content.decode()
    assert "C0DE42" in body
    assert (
        'content="5;url=https://app.prolific.com/submissions/complete?cc=C0DE42"'
        in body
    )
    p = Participation.objects.get(annotator=annotator)
    assert p.completed_at is not None and p.completion_code == "C0DE42"


def test_done_page_before_finishing_sends_back(client, open_study):
    joined(client, open_study)
    r = client.get(reverse("annotation:done", args=[open_study.slug]))
    assert r.status_code == 302 and r.url.endswith(f"/s/{open_study.slug}/")


def test_waiting_page_when_remaining_images_are_leased_by_others(client, db):
    study = StudyFactory(raters_per_image=1, quota_per_annotator=5)
    make_images(study, 3)
    other = join(services.annotator_create(), study)
    services.assignment_claim(annotator=other, study=study, hold=3)
    joined(client, study)
    r = client.get(reverse("annotation:rate", args=[study.slug]))
    assert r.status_code == 200
    assert "One moment" in r.content.decode()
    assert Participation.objects.filter(completed_at__isnull=False).count() == 0


def expire_and_fill(study, assignment_id):
    """The lease runs out, is swept, and other people fill the image meanwhile."""
    past = timezone.now() - timedelta(hours=1)
    Assignment.objects.filter(pk=assignment_id).update(
        leased_at=past - timedelta(seconds=1), expires_at=past
    )
    services.lease_expire(study_id=study.pk)
    image = Assignment.objects.get(pk=assignment_id).image
    rate_image(image, image.open_slots)


def test_expired_lease_says_timed_out_and_shows_next(client, open_study):
    annotator = joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    expire_and_fill(open_study, item_resolve(a)[1])
    r = client.post(
        reverse("annotation:item_rate", args=[open_study.slug, a]),
        {"score": "5"},
        **HTMX,
    )
    assert r.status_code == 200
    body = r.content.decode()
    assert "This image timed out" in body
    assert current_assignment(body) != a
    assert not Rating.objects.filter(
        annotator=annotator, assignment_id=item_resolve(a)[1]
    ).exists()


def test_expired_lease_no_js_shows_message_after_redirect(client, open_study):
    joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    expire_and_fill(open_study, item_resolve(a)[1])
    r = client.post(
        reverse("annotation:item_rate", args=[open_study.slug, a]),
        {"score": "5"},
        follow=True,
    )
    assert "This image timed out" in r.content.decode()


def test_paused_account_gets_a_friendly_page(client, open_study):
    annotator = joined(client, open_study)
    services.annotator_set_status(annotator=annotator, status="paused")
    r = client.get(reverse("annotation:rate", args=[open_study.slug]))
    assert r.status_code == 403
    body = r.content.decode()
    assert "Your account is paused" in body and "<html" in body


def test_paused_account_htmx_gets_fragment(client, open_study):
    annotator = joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    services.annotator_set_status(annotator=annotator, status="paused")
    r = client.post(
        reverse("annotation:item_rate", args=[open_study.slug, a]),
        {"score": "5"},
        **HTMX,
    )
    assert r.status_code == 403
    body = r.content.decode()
    assert body.lstrip().startswith('<section id="rater"')
    assert "Your account is paused" in body


def test_closed_study_friendly_page(client, open_study):
    joined(client, open_study)
    Study.objects.filter(pk=open_study.pk).update(status="closed")
    r = client.get(reverse("annotation:rate", args=[open_study.slug]))
    assert r.status_code == 403
    assert "This study is closed" in r.content.decode()
    # New people cannot join a closed study either.
    r = Client().get(join_url(open_study))
    assert r.status_code == 403


def test_rating_page_needs_a_joined_session(client, open_study):
    r = client.get(reverse("annotation:rate", args=[open_study.slug]))
    assert r.status_code == 403
    assert "Please use your study link" in r.content.decode()


def test_cannot_rate_someone_elses_assignment(client, open_study):
    joined(client, open_study)
    other = join(services.annotator_create(), open_study)
    theirs = services.assignment_claim(annotator=other, study=open_study)[0]
    r = client.post(
        reverse(
            "annotation:item_rate",
            args=[open_study.slug, item_token(kind=ASSIGNMENT, pk=theirs.pk)],
        ),
        {"score": "5"},
    )
    assert r.status_code == 404
    assert not Rating.objects.filter(assignment=theirs).exists()


def test_bad_score_is_a_400(client, open_study):
    joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    url = reverse("annotation:item_rate", args=[open_study.slug, a])
    assert client.post(url, {"score": "x"}).status_code == 400
    assert client.post(url, {"score": "99"}).status_code == 400


def test_get_on_post_views_is_refused(client, open_study):
    joined(client, open_study)
    assert (
        client.get(
            reverse("annotation:item_rate", args=[open_study.slug, "x" * 22])
        ).status_code
        == 405
    )


def test_staff_can_try_the_flow(client, open_study, staff_user):
    client.force_login(staff_user)
    r = client.get(reverse("annotation:rate", args=[open_study.slug]))
    assert r.status_code == 302 and r.url.endswith("/consent")
    r = client.post(r.url, {"agree": "on"})
    assert r.status_code == 302
    assert Participation.objects.get(annotator__user=staff_user).consented_at


def test_scale_keys_follow_positions_for_negative_scales(client, db):
    study = StudyFactory(
        scale_min=-2, scale_max=2, scale_labels=["--", "-", "0", "+", "++"]
    )
    make_images(study, 2)
    joined(client, study)
    body = client.get(reverse("annotation:rate", args=[study.slug])).content.decode()
    keys = re.findall(r'name="score" value="(-?\d+)" data-key="(\d)"', body)
    assert keys == [("-2", "1"), ("-1", "2"), ("0", "3"), ("1", "4"), ("2", "5")]


def test_home_page(client, db):
    r = client.get("/")
    assert r.status_code == 200
    assert "/api/v1/docs/" in r.content.decode()


def test_pages_reference_only_local_assets(client, open_study):
    joined(client, open_study)
    body = client.get(
        reverse("annotation:rate", args=[open_study.slug])
    ).content.decode()
    assert "/static/vendor/htmx.min.js" in body
    assert "hx-headers" in body and "X-CSRFToken" in body
    assert not re.search(r'(src|href)="https?://', body)


def test_no_js_double_post_records_one_rating(client, open_study):
    annotator = joined(client, open_study)
    a = current_assignment(
        client.get(reverse("annotation:rate", args=[open_study.slug])).content.decode()
    )
    url = reverse("annotation:item_rate", args=[open_study.slug, a])
    assert client.post(url, {"score": "5"}).status_code == 303
    assert client.post(url, {"score": "5"}).status_code == 303
    assert Rating.objects.filter(annotator=annotator).count() == 1


def test_pause_and_instructions_pages_work_without_js(client, open_study):
    joined(client, open_study)
    body = client.get(reverse("annotation:pause", args=[open_study.slug])).content
    assert b"Resume" in body and f"/s/{open_study.slug}/".encode() in body
    body = client.get(reverse("annotation:instructions", args=[open_study.slug]))
    # Once started, the instructions page leads back to rating, not "Start".
    assert b"Back to rating" in body.content and b"Start rating" not in body.content
