"""The taste portrait through Django's test client: who may see it, what it
shows, the one-click answers, the staff views, and what it never reveals."""

import re

import pytest
from django.urls import reverse

from annotation.models import Image, Rating
from portrait import selectors
from portrait.models import PortraitFeedback, PortraitSettings
from tests.factories import joined
from tests.portrait.conftest import personal_newcomers, rate_some

pytestmark = pytest.mark.django_db

MEDIA = re.compile(r'src="(/media/i/[A-Za-z0-9_-]{22})"')


def page_url(study):
    return reverse("portrait:page", args=[study.slug])


def participant(client, study, n: int, score=lambda image: 4):
    person = joined(client, study)
    rated = rate_some(person, study, n, score)
    return person, rated


def test_portrait_shows_own_extremes_predictions_and_crowd(client, portrait_study):
    study, _, _ = portrait_study
    person, rated = participant(
        client, study, 12, score=lambda im: 1 + sum(im.provenance["rgb"]) % 7
    )
    r = client.get(page_url(study))
    assert r.status_code == 200
    body = r.content.decode()
    for section in ("portrait-rated", "portrait-predicted", "portrait-crowd"):
        assert f'id="{section}"' in body
    # Pictures come through opaque tokens only, and each one serves its file.
    urls = MEDIA.findall(body)
    assert len(urls) >= 8
    assert "/media/images/" not in body
    assert client.get(urls[0]).status_code == 200
    p = selectors.portrait_build(study=study, annotator=person, min_ratings=5)
    own = dict(Rating.objects.filter(annotator=person).values_list("image_id", "score"))
    assert [x.score for x in p.highest] == sorted(own.values(), reverse=True)[:4]
    assert [x.score for x in p.lowest] == sorted(own.values())[:4]
    # Predictions: images they have not rated, favourites first.
    predicted = [x.image_id for x in p.liked_pred + p.disliked_pred]
    assert p.model_state == "ok"
    assert not set(predicted) & set(own)
    assert "Based on your 12 ratings" in p.certainty_words


def test_fewer_ratings_than_needed_says_how_many(client, portrait_study):
    study, _, _ = portrait_study
    participant(client, study, 2)
    body = client.get(page_url(study)).content.decode()
    assert 'id="portrait-needed"' in body
    assert "Rate 3 more images" in body
    assert not MEDIA.findall(body)


def test_portrait_off_is_not_found_and_not_linked(client, portrait_study):
    study, _, _ = portrait_study
    PortraitSettings.objects.filter(study=study).update(enabled=False)
    participant(client, study, 6)
    assert client.get(page_url(study)).status_code == 404
    rate_page = client.get(reverse("annotation:rate", args=[study.slug]))
    assert page_url(study) not in rate_page.content.decode()


def test_rating_page_links_to_the_portrait(client, portrait_study):
    study, _, _ = portrait_study
    participant(client, study, 1)
    body = client.get(reverse("annotation:rate", args=[study.slug])).content.decode()
    assert f'href="{page_url(study)}"' in body


def test_the_next_rating_shows_at_once(client, portrait_study):
    """The live newcomer path: a rating made just now moves the portrait."""
    study, _, run = portrait_study
    personal_newcomers(run)
    person, _ = participant(client, study, 6)
    before = selectors.portrait_build(study=study, annotator=person, min_ratings=5)
    new = rate_some(person, study, 1, score=lambda im: 7)[0]
    after = selectors.portrait_build(study=study, annotator=person, min_ratings=5)
    assert "Based on your 7 ratings" in after.certainty_words
    assert new.pk in [x.image_id for x in after.highest]
    assert new.pk not in [x.image_id for x in after.liked_pred + after.disliked_pred]
    assert before.typical_spread != after.typical_spread
    assert after.certainty != "not_personal"


def _complete(client, study, person):
    from annotation import services as ann

    participation = ann.participation_get_or_create(annotator=person, study=study)
    ann.participation_complete(participation=participation)


@pytest.mark.parametrize("allowed", [False, True])
def test_prolific_participants_see_it_before_the_redirect_only_if_allowed(
    client, portrait_study, allowed
):
    study, _, _ = portrait_study
    study.completion_url = "https://app.prolific.com/submissions/complete?cc={code}"
    study.completion_code = "C0DE42"
    study.save()
    PortraitSettings.objects.filter(study=study).update(
        before_completion_redirect=allowed
    )
    person = joined(
        client, study, PROLIFIC_PID="pid-1", STUDY_ID="s1", SESSION_ID="sess-1"
    )
    assert person.source == "prolific"
    rate_some(person, study, 6)
    _complete(client, study, person)
    done = client.get(reverse("annotation:done", args=[study.slug])).content.decode()
    page = client.get(page_url(study))
    if allowed:
        assert 'http-equiv="refresh"' not in done  # they go on with the button
        assert f'href="{page_url(study)}"' in done
        assert page.status_code == 200
        body = page.content.decode()
        assert 'id="portrait-rated"' in body
        assert 'href="https://app.prolific.com/submissions/complete?cc=C0DE42"' in body
    else:
        assert 'content="5;url=https://app.prolific.com/' in done
        assert page_url(study) not in done
        assert page.status_code == 403


def test_nothing_of_another_participant_is_revealed(client, portrait_study):
    """Others appear only as a mean over at least five of them, from the ratings
    the model was trained on: a later rating by one other person changes nothing
    on the page, and no one's id or own score is shown."""
    study, people, _ = portrait_study
    person, rated = participant(client, study, 10)
    before = client.get(page_url(study)).content.decode()
    crowd_before = _section(before, "portrait-crowd")
    # Someone new rates the same images at the extreme after training.
    from annotation import services as ann

    other = ann.annotator_create()
    ann.participation_consent(annotator=other, study=study, token=study.invite_token)
    rate_some(other, study, 10, score=lambda im: 7)
    after = client.get(page_url(study)).content.decode()
    assert _section(after, "portrait-crowd") == crowd_before
    for someone in [*people, other]:
        assert someone.public_id not in after
    # An image rated by fewer than five others shows no crowd figure at all.
    lonely = (
        Image.objects.filter(study=study)
        .exclude(pk__in=[im.pk for im in rated])
        .first()
    )
    got = selectors.crowd_means(
        study=study, annotator=person, image_ids=[lonely.pk], up_to=None
    )
    assert lonely.pk in got  # eight others rated it
    Rating.objects.filter(image=lonely).exclude(annotator__in=people[:4]).update(
        is_valid=False
    )
    got = selectors.crowd_means(
        study=study, annotator=person, image_ids=[lonely.pk], up_to=None
    )
    assert got == {}  # four others: not shown


def _section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    return html[start : html.index("</section>", start)]


def _predicted_token(body: str, side: str) -> str:
    return re.search(
        rf'name="token" value="([A-Za-z0-9_-]{{22}})"><input type="hidden" '
        rf'name="side" value="{side}"',
        body,
    ).group(1)


def test_feedback_is_stored_once_and_never_counted(client, portrait_study, monkeypatch):
    from portrait import words

    # The predictions (and their buttons) shown whatever this tiny study's
    # model makes of the 12 images the engine happens to deal (at random): with
    # some deals it is unsure and rightly shows none. The answers are the point.
    monkeypatch.setattr(words, "SOMEWHAT", 0.0)
    study, _, _ = portrait_study
    person, _ = participant(
        client, study, 12, score=lambda im: 1 + sum(im.provenance["rgb"]) % 7
    )
    body = client.get(page_url(study)).content.decode()
    token = _predicted_token(body, "like")
    url = reverse("portrait:feedback", args=[study.slug])
    ratings = Rating.objects.count()
    r = client.post(url, {"token": token, "answer": "me", "side": "like"})
    assert r.status_code == 303 and r.url.endswith(f"#fb-{token}")
    r = client.post(url, {"token": token, "answer": "not_me", "side": "like"})
    row = PortraitFeedback.objects.get()
    assert (row.answer, row.side, row.annotator_id) == ("not_me", "like", person.pk)
    assert row.predicted is not None and row.version_id is not None
    assert row.n_ratings == 12
    assert Rating.objects.count() == ratings  # never a rating
    page = client.get(page_url(study)).content.decode()
    assert 'value="not_me" aria-pressed="true"' in page
    # Bad input: a clear answer, nothing stored.
    bad = [
        {"token": token, "answer": "maybe", "side": "like"},
        {"token": "A" * 22, "answer": "me", "side": "like"},
        {"token": token, "answer": "me", "side": "sideways"},
    ]
    for data in bad:
        assert client.post(url, data).status_code in (400, 404)
    assert PortraitFeedback.objects.get().answer == "not_me"


def test_feedback_on_an_image_they_rated_is_refused(client, portrait_study):
    from portrait.tokens import feedback_token

    study, _, _ = portrait_study
    _, rated = participant(client, study, 6)
    r = client.post(
        reverse("portrait:feedback", args=[study.slug]),
        {"token": feedback_token(rated[0].pk), "answer": "me", "side": "like"},
    )
    assert r.status_code == 400
    assert "You rated that image yourself" in r.content.decode()
    assert not PortraitFeedback.objects.exists()


def test_staff_see_the_portrait_and_edit_the_settings(
    client, portrait_study, staff_user
):
    from django.test import Client

    study, _, _ = portrait_study
    person, _ = participant(client, study, 8)
    staff = Client()
    staff.force_login(staff_user)
    r = staff.get(reverse("dashboard:annotator", args=[study.pk, person.pk]))
    body = r.content.decode()
    # The dashboard page loads it (htmx), or links to it without JavaScript.
    url = reverse("portrait:staff", args=[study.pk, person.pk])
    assert f'hx-get="{url}"' in body and f'href="{url}"' in body
    fragment = staff.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="portrait-rated"' in fragment and 'id="portrait-predicted"' in fragment
    assert 'name="answer"' not in fragment  # staff see answers, not buttons
    assert "<html" not in fragment
    assert 'id="portrait-rated"' in staff.get(url).content.decode()
    assert client.get(url).status_code == 302  # participants: to the login
    url = reverse("portrait:settings", args=[study.pk])
    page = staff.get(reverse("dashboard:study", args=[study.pk])).content.decode()
    assert f'hx-get="{url}"' in page
    assert (
        'name="min_ratings"' in staff.get(url, HTTP_HX_REQUEST="true").content.decode()
    )
    r = staff.post(url, {"enabled": "", "min_ratings": "3"})
    assert r.status_code == 400  # below 5: nothing saved
    assert PortraitSettings.objects.get(study=study).enabled
    r = staff.post(url, {"before_completion_redirect": "on", "min_ratings": "30"})
    assert r.status_code == 302
    s = PortraitSettings.objects.get(study=study)
    assert (s.enabled, s.before_completion_redirect, s.min_ratings) == (
        False,
        True,
        30,
    )
    # Participants cannot change it.
    assert client.post(url, {"enabled": "on", "min_ratings": "5"}).status_code == 302
    assert not PortraitSettings.objects.get(study=study).enabled


def test_erasure_deletes_the_answers(client, portrait_study):
    from annotation.services import annotator_erase

    study, _, _ = portrait_study
    person, _ = participant(client, study, 6)
    image = Image.objects.filter(study=study).exclude(ratings__annotator=person).first()
    PortraitFeedback.objects.create(
        study=study, annotator=person, image=image, answer="me", side="like"
    )
    annotator_erase(annotator_id=person.pk, reason="asked")
    assert not PortraitFeedback.objects.exists()


def test_answers_are_exported_for_the_lab(client, portrait_study, tmp_path):
    import csv

    from django.core.management import CommandError, call_command

    study, _, _ = portrait_study
    person, _ = participant(client, study, 6)
    image = Image.objects.filter(study=study).exclude(ratings__annotator=person).first()
    PortraitFeedback.objects.create(
        study=study,
        annotator=person,
        image=image,
        answer="not_me",
        side="dislike",
        predicted=2.5,
        n_ratings=6,
    )
    out = tmp_path / "feedback.csv"
    call_command("export_portrait_feedback", study.slug, out=str(out))
    rows = list(csv.DictReader(out.open()))
    assert [(r["annotator"], r["image_sha256"], r["answer"]) for r in rows] == [
        (person.public_id, image.sha256, "not_me")
    ]
    with pytest.raises(CommandError):
        call_command("export_portrait_feedback", "no-such-study")
