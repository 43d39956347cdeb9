"""The portrait in the study's language (issue 28): a study set to German
(``Study.language``) shows its participants the portrait, its words and the
portrait's links in German from the committed catalogue; any other study stays
in English, in the same process, request after request."""

import ast
import gettext
import html
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from portrait.models import PortraitSettings
from tests.factories import joined
from tests.portrait.conftest import personal_newcomers, rate_some

pytestmark = pytest.mark.django_db

CATALOGUE = Path(settings.BASE_DIR) / "locale" / "de" / "LC_MESSAGES"
# Words every English sentence of the portrait uses and no German one does.
ENGLISH = re.compile(r"\b(the|you|your|of|and|is|what|would|rated|this)\b", re.I)


def visible_text(body: str) -> str:
    """What a person reads: the text between tags and the images' alt text,
    without the page's scripts and styles."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    alts = " ".join(re.findall(r'alt="([^"]*)"', body))
    return html.unescape(re.sub(r"<[^>]+>", " ", body) + " " + alts)


def _german_scale(study):
    """The study's own words are the researchers' (scale labels, name): German
    too, so that every English word left on the page is the portrait's."""
    study.name = "Bilderstudie"
    study.scale_labels = ["gar nicht"] + [""] * 5 + ["sehr"]
    study.save()


def test_a_german_study_shows_the_portrait_in_german(client, portrait_study):
    study, _, run = portrait_study
    personal_newcomers(run)
    _german_scale(study)
    study.language = "de"
    study.save(update_fields=["language"])
    person = joined(client, study)
    rate_some(person, study, 2)
    url = reverse("portrait:page", args=[study.slug])
    body = client.get(url).content.decode()
    assert '<html lang="de">' in body
    assert "Bewerten Sie noch 3 Bilder" in body and "Bisher haben Sie 2 Bilder" in body
    rate_some(person, study, 10, score=lambda im: 1 + sum(im.provenance["rgb"]) % 7)
    body = client.get(url).content.decode()
    assert "Das Porträt Ihres Geschmacks" in body
    assert "Auf Grundlage Ihrer 12 Bewertungen" in body
    assert "Sie und die anderen" in body
    assert 'id="portrait-predicted"' in body
    text = visible_text(body)
    assert not ENGLISH.findall(text), ENGLISH.findall(text)
    # The portrait's link on the rating page too.
    rate = client.get(reverse("annotation:rate", args=[study.slug])).content.decode()
    assert ">Ihr Geschmack<" in rate


def test_any_other_study_stays_in_english(client, portrait_study):
    study, _, _ = portrait_study
    german = type(study).objects.get(pk=study.pk)
    german.pk, german.slug, german.language = None, "auf-deutsch", "de"
    german.invite_token = "another-token"
    german.save()
    PortraitSettings.objects.create(study=german, enabled=True, min_ratings=5)
    assert study.language == "en"  # the default
    joined(client, german)
    body = client.get(reverse("portrait:page", args=[german.slug])).content.decode()
    assert "Bewerten Sie noch 5 Bilder" in body
    person = joined(client, study)
    rate_some(person, study, 6)
    body = client.get(reverse("portrait:page", args=[study.slug])).content.decode()
    assert "The portrait of your taste" in body and "Based on your 6 ratings" in body
    assert "Porträt" not in body and "Bewertung" not in body
    assert '<html lang="en' in body


def _po_entries(path: Path) -> dict:
    """msgid (or (msgid, msgid_plural)) → msgstr (or the plural forms), and
    the flags, from a .po file."""
    entries, flags, current, key = {}, {}, {}, None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("#,"):
            current["flags"] = line
        elif line.startswith('"'):
            current[key] += ast.literal_eval(line)
        elif line.strip() and not line.startswith("#"):
            key, value = line.split(" ", 1)
            current[key] = ast.literal_eval(value)
        elif not line.strip() and current:
            if current.get("msgid"):  # (the header has none)
                plural = current.get("msgid_plural")
                k = (current["msgid"], plural) if plural else current["msgid"]
                entries[k] = (
                    (current["msgstr[0]"], current["msgstr[1]"])
                    if plural
                    else current["msgstr"]
                )
                flags[k] = current.get("flags", "")
            current, key = {}, None
    return entries, flags


def test_the_committed_catalogue_is_complete_and_compiled():
    """Every entry of the .po is translated and not fuzzy, and the committed
    .mo (what Django reads; no gettext tools are needed to run Palate or its
    tests) says exactly what the .po says."""
    entries, flags = _po_entries(CATALOGUE / "django.po")
    assert len(entries) >= 50
    with (CATALOGUE / "django.mo").open("rb") as fh:
        mo = gettext.GNUTranslations(fh)
    for key, value in entries.items():
        assert "fuzzy" not in flags[key], key
        if isinstance(key, tuple):
            assert all(value), key
            assert mo.ngettext(*key, 1) == value[0]
            assert mo.ngettext(*key, 2) == value[1]
        else:
            assert value, key
            assert mo.gettext(key) == value
